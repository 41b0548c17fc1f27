#!/usr/bin/env bash
# One-shot GPU check for a borrowed GPU machine (no downloads needed there): the GPU tests,
# then the backend benchmark with cupy beside numpy/numba. Run from the repository root:
#
#     bash benchmarks/gpu_check.sh            # writes to $OUT if set, else benchmarks/results
#
# Needs python with numpy, scipy, numba, cupy (cupy-cuda12x or cupy-cuda13x), pytest; mpi4py
# is optional (the MPI comparison is skipped with --no-mpi below to keep the run short).
set -u
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-benchmarks/results}"
mkdir -p "$OUTDIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PROSPER_BENCH_RESULTS="$OUTDIR"
PY="${PYTHON:-python}"

{
  echo "# gpu_check $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$PY" -c "import cupy; print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion(), 'devices', cupy.cuda.runtime.getDeviceCount())" 2>&1
  "$PY" -c "import prosper.backends as b; print('available backends:', b.available_backends())" 2>&1
} | tee "$OUTDIR/gpu_env.txt"

# 1) GPU tests (cupy vs numpy to 1e-10, nvcc compile check if nvcc is present)
timeout 300 "$PY" -m pytest tests/gpu -q -rs 2>&1 | tee "$OUTDIR/gpu_tests.txt"
tests_rc=${PIPESTATUS[0]}

# 2) benchmark: numpy, numba (1 and 2 threads) and cupy on both cases; one run, same machine.
#    --threads 1,2 matches the CPU record; add e.g. 16 for the whole host.
THREADS="${THREADS:-1,2,16}"
timeout 420 "$PY" benchmarks/bench_backends.py --gpu --no-mpi --threads "$THREADS" \
  --name backends_gpu "$@" 2>&1 | tee "$OUTDIR/bench_backends_gpu.txt"
bench_rc=${PIPESTATUS[0]}

echo "tests rc=$tests_rc bench rc=$bench_rc" | tee -a "$OUTDIR/gpu_env.txt"
exit $(( tests_rc != 0 || bench_rc != 0 ))
