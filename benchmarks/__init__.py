"""Benchmarks: importable, tested on `tiny`, run full size from the command line. Each compares against eager
PyTorch in the same run, interleaved, and reports medians and ratios."""
