"""Experiments: comparisons, benchmarks, results, and the `greenphase` command line."""
