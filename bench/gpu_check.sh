#!/usr/bin/env bash
# GPU readiness check (one script, nothing to download, about 5 minutes on one H100):
# Karlo-sized and Kandinsky-2.2-sized stacks with random bf16 weights, images/s at batch 1/4/8,
# seconds per stage and achieved TFLOP/s per stage. Prints JSON on stdout, a Markdown table on
# stderr. Needs the worker extra installed (make install) and a CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
exec "$PYTHON" bench/gpu_check.py --device cuda --batches 1,4,8 "$@"
