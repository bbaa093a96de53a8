"""The portal's pages, one module each (run by Streamlit as scripts; a package so that the import
contracts see them)."""
