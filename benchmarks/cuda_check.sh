#!/usr/bin/env bash
# The fused engine's CUDA checks in one command, for a machine with an NVIDIA GPU:
#
#     bash benchmarks/cuda_check.sh [tests|bench|all]      (default: all)
#
# 1. tests: every test marked `gpu` (tests/test_fused.py, tests/test_init.py,
#    tests/test_capturable.py) must pass, not skip;
# 2. bench: the step benchmark on CUDA for the gpt2 and many_small layouts (foreach and fused
#    rows, 2 s of timed steps a row), with the GPU's measured copy bandwidth, for the CUDA
#    section of benchmarks/RESULTS.md.
#
# Each part compiles Triton kernels for every optimizer, minutes on a fresh machine; run them
# as two commands where one command may take at most 10 minutes.
#
# optimlab runs from src/ without being installed, with the `python3` that holds a CUDA build
# of torch (or $PYTHON). Logs and the JSON go to $OUT when it is set, else to
# benchmarks/results. Exit status: 0 when both parts succeeded.
set -uo pipefail
part="${1:-all}"
case "$part" in
    tests | bench | all) ;;
    *)
        echo "usage: bash benchmarks/cuda_check.sh [tests|bench|all]" >&2
        exit 2
        ;;
esac
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "cuda_check: $py's torch sees no CUDA device" >&2
    exit 2
fi
"$py" -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name())'

tests=0
bench=0
if [ "$part" != bench ]; then
    # The test files import only torch, numpy and pytest, which GPU images have; the lab's
    # tests would need the lab's extras.
    "$py" -m pytest -q -p no:cacheprovider -m gpu -rs tests/test_fused.py tests/test_init.py \
        tests/test_capturable.py \
        2>&1 | tee "$out/cuda_tests.log"
    tests=${PIPESTATUS[0]}
    if grep -q "skipped" "$out/cuda_tests.log"; then
        echo "cuda_check: some GPU tests skipped on a GPU machine" >&2
        tests=1
    fi
fi
if [ "$part" != tests ]; then
    "$py" benchmarks/step_speed.py --device cuda --layout gpt2 many_small --engines foreach fused \
        --budget 2 --plain --json "$out/step_speed-cuda.json" 2>&1 | tee "$out/cuda_bench.log"
    bench=${PIPESTATUS[0]}
fi

echo "cuda_check ($part): gpu tests exit $tests, benchmark exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
