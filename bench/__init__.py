"""Benchmarks, run from the checkout's root as modules: `.venv/bin/python -m bench.<name>` (see `make bench`)."""
