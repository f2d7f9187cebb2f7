"""The reliability suite and its report: ``python -m benchmarks.reliability.run``."""
