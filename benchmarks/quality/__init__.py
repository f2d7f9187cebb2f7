"""GANI vs PTI vs projection, demo and testbed generators: ``python -m benchmarks.quality.run``."""
