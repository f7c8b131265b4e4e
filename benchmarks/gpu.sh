#!/usr/bin/env bash
# Throughput of the guard on a GPU: bench_guard.py's throughput part with `execution.provider: cuda`.
# Needs an NVIDIA GPU and onnxruntime-gpu (in place of onnxruntime) in the Python that runs it:
#   pip uninstall -y onnxruntime && pip install onnxruntime-gpu
# Without both it says so and exits 0. Writes benchmarks/results/guard-gpu.md.
#   PYTHON=/path/to/python bash benchmarks/gpu.sh [extra bench_guard.py arguments]
# The shipped int8 model is not batch-invariant, so it runs every exchange alone, on a GPU too;
# pass --model DIR with an fp32 export (`beaverguard export --precision fp32`) to measure GPU batching.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu.sh: no NVIDIA GPU here (nvidia-smi finds none); nothing to measure."
    exit 0
fi
if ! "$PYTHON" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' 2>/dev/null; then
    echo "gpu.sh: $PYTHON's onnxruntime offers no CUDAExecutionProvider (install onnxruntime-gpu); nothing to measure."
    exit 0
fi
nvidia-smi -L
# Bigger loads than on a 2-core CPU: a GPU run takes batches of up to 64.
exec "$PYTHON" benchmarks/bench_guard.py --only throughput --provider cuda --concurrency 1,8,32,128,512 \
    -n 1024 --name guard-gpu "$@"
