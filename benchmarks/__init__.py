"""Benchmarks of the pipeline (quality, speed, reliability, the trained testbed).

An importable package so the scripts run as modules from the repository root
(``python -m benchmarks.quality.run``) and import each other as modules; nothing in ``gani``,
``tasks`` or ``flows`` imports it (tests/test_architecture.py checks that).
"""
