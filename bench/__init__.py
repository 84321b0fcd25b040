"""Harness of the guidance benchmark suite: runs, records, reports, comparisons."""
__version__ = "0.1.0"
