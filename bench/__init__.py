"""Benchmarks and the fault matrix (``python -m bench``; see bench/reference/README.md)."""
