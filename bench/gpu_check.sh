#!/usr/bin/env bash
# GPU readiness check (one script, nothing to download): Karlo-sized and Kandinsky-2.2-sized
# stacks with random bf16 weights at batch 1/4/8/16/32, each run plain and then with the
# worker's speed-ups (engine/render/speedups.py) in the same process: images/s, seconds and
# achieved TFLOP/s per stage, compile time, and the pixel difference between the two. Prints
# JSON on stdout, a Markdown table on stderr. Needs the worker extra installed (make install)
# and a CUDA build of torch. The plain half took 66 s on an H200 at batch 1/4/8; the compile
# time of the accelerated half is not measured yet: give it 10 minutes, or pass --batches 8
# (or --plain-only) for a shorter run. COMPILE_CACHE keeps compiled kernels for a second run;
# OUT_JSON is rewritten after every batch, so a run cut short keeps what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
exec "$PYTHON" bench/gpu_check.py --device cuda --batches 1,4,8,16,32 \
    --compile-cache "${COMPILE_CACHE:-${TMPDIR:-/tmp}/imagine-gpu-check-cache}" \
    --out "${OUT_JSON:-bench/results/gpu_check-partial.json}" "$@"
