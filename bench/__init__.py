"""Benchmarks: they print figures and assert nothing. Lab addresses only."""
