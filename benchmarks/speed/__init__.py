"""Tuning speed and memory: ``python -m benchmarks.speed.run``."""
