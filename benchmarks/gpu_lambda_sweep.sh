#!/usr/bin/env bash
# The regulariser-weight sweep (benchmarks/lambda_sweep.py) on one CUDA GPU: first the CUDA check
# (benchmarks/cuda_check.py), then the sweep's trainings and compressions as WORKERS Dask worker
# processes sharing the GPU (default 8). If a compression fails on CUDA, the trainings still run
# (--train-only) so that they can be compressed elsewhere from the checkpoint cache.
#
#   bash benchmarks/gpu_lambda_sweep.sh OUT [WORKERS]
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_lambda_sweep.sh OUT [WORKERS]}
workers=${2:-8}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
python3 "$here/cuda_check.py" --out "$out"
rc=$?
case $rc in
0) exec python3 "$here/lambda_sweep.py" --workers "$workers" --out "$out" ;;
3)
    echo "gpu_lambda_sweep: a compression method failed on CUDA (see $out/cuda_check.md): training only"
    exec python3 "$here/lambda_sweep.py" --workers "$workers" --train-only
    ;;
*) exit "$rc" ;;
esac
