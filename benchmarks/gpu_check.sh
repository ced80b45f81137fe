#!/usr/bin/env bash
# The GPU check of issue 16 (benchmarks/README.md, "gpu_check.sh"): on a bare machine with one NVIDIA GPU, in
# under 8 minutes, install loghi-ft, then measure training and inference speed, the GPU's busy fraction and
# memory, and one torchrun/NCCL run, into one JSON file. Each step has its own time limit; the JSON is rewritten
# after every step, so it holds whatever was measured even when a step fails.
#
#   benchmarks/gpu_check.sh [RESULT.json]            the check (default: $OUT/gpu_check.json)
#   benchmarks/gpu_check.sh --cpu-smoke RESULT.json  the same steps, tiny, on the CPU: try the script here first
#   benchmarks/gpu_check.sh --fetch-wheels           here, before a run on a machine that reaches no registry:
#                                                    wheels of the dependencies its image lacks, into .whl/
# More options: python benchmarks/gpu_check.py --help (--budget SECONDS).

PYTHON=${PYTHON:-python3}            # the Python that holds torch (on the lent H200 machine: python3)
DEVICE_PYTHON=3.12                   # that machine's Python version (/work/.library/device/KINDS.md)
DEVICE_WHEELS=(rapidfuzz==3.14.6)    # our dependencies its image lacks (KINDS.md lists the packages it has)

set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} == --fetch-wheels ]]; then
    mkdir -p .whl .git/info
    # ignored by git, so the device tool sends it only when its carry names it: carry [".whl"]
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >>.git/info/exclude
    exec "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${DEVICE_WHEELS[@]}"
fi

export PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"
