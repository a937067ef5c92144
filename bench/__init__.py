"""Benchmark and load harnesses (never deployed; see README)."""
