"""Benchmarks behind ``medlabel bench ...``: each prints or writes one JSON object."""
