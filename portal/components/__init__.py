"""Rendering helpers for DTOs, shared by pages."""
