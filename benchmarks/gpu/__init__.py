"""The one-shot GPU benchmark at 1024 px (`python -m benchmarks.gpu.run`), its FLOP model
(`benchmarks.gpu.flops`) and the wheels the device machine lacks (`benchmarks/gpu/wheels.sh`).
See benchmarks/gpu/README.md."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
