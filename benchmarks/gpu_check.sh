#!/usr/bin/env bash
# One-shot GPU check for a borrowed GPU machine (no downloads needed there): the GPU tests,
# the E-step benchmark and the time-to-recovery benchmark with cupy beside numpy/numba, and
# a 1- vs 2-rank MPI fit on the cupy backend. Run from the repository root:
#
#     bash benchmarks/gpu_check.sh            # writes to $OUT if set, else benchmarks/results
#
# Needs python with numpy, scipy, numba, h5py, cupy (cupy-cuda12x or cupy-cuda13x), pytest;
# mpi4py for the MPI step. A machine without network access and without the pure-Python
# dependencies gets them from a folder made beforehand on another machine and copied along:
#
#     pip install --target .gpu_site --no-deps threadpoolctl tqdm
set -u
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-benchmarks/results}"
mkdir -p "$OUTDIR"
SITE=""
[ -d .gpu_site ] && SITE="$PWD/.gpu_site:"
export PYTHONPATH="$SITE$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PROSPER_BENCH_RESULTS="$OUTDIR"
# an absolute path: Open MPI's mpiexec, itself called by its absolute path, puts its own
# prefix's bin first on the ranks' PATH, where "python" may be another interpreter
PY="$(command -v "${PYTHON:-python}")" || { echo "gpu_check: ${PYTHON:-python} not found" >&2; exit 2; }

{
  echo "# gpu_check $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$PY" -c "import cupy; print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion(), 'devices', cupy.cuda.runtime.getDeviceCount())" 2>&1
  "$PY" -c "import prosper.backends as b; print('available backends:', b.available_backends())" 2>&1
  nproc; uptime
} | tee "$OUTDIR/gpu_env.txt"

# 1) GPU tests (cupy vs numpy, estimators end to end, nvcc compile check if nvcc is present),
#    the host-side tests of the cupy module and the tests that compare every available backend
timeout 300 "$PY" -m pytest -q -rs -p no:cacheprovider tests/gpu tests/unit/test_cupy_host.py \
  tests/unit/test_noisy_or.py 2>&1 | tee "$OUTDIR/gpu_tests.txt"
tests_rc=${PIPESTATUS[0]}

# 2) E-step benchmark: numpy, numba (THREADS) and cupy (float64, float32; two batch sizes)
THREADS="${THREADS:-1,2,16}"
timeout 300 "$PY" benchmarks/bench_backends.py --gpu --no-mpi --no-compile-check \
  --threads "$THREADS" --gpu-batch-size 10000,50000 --name backends_gpu \
  2>&1 | tee "$OUTDIR/bench_backends_gpu.txt"
bench_rc=${PIPESTATUS[0]}

# 3) time to recovery of 10x10 bars (N = 50000): numba 2 and 16 threads, cupy float64/float32
timeout 300 "$PY" benchmarks/bench_gpu_fit.py --seeds 0,1 --threads 2,16 \
  2>&1 | tee "$OUTDIR/bench_gpu_fit.txt"
fit_rc=${PIPESTATUS[0]}

# 4) the same job on the cupy backend with 1 and 2 MPI ranks (both ranks share the GPU
#    when the machine has one): the learned W must agree
mpi_rc=0
MPIEXEC="$(command -v mpiexec || true)"
# Open MPI refuses to start as root (containers) unless told twice
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ -n "$MPIEXEC" ]; then
  # no result of an earlier run may stand in for a failed fit
  rm -f "$OUTDIR/mpi_cupy_1.h5" "$OUTDIR/mpi_cupy_2.h5"
  for n in 1 2; do
    timeout 120 "$MPIEXEC" -n "$n" "$PY" -m prosper fit examples/bsc_bars.toml \
      --out "$OUTDIR/mpi_cupy_$n.h5" --overwrite --no-progress \
      --set model.backend=cupy --set model.n_iter=20 > "$OUTDIR/mpi_cupy_$n.log" 2>&1 \
      || echo "mpiexec -n $n: exit $? (whole log: $OUTDIR/mpi_cupy_$n.log)"
    tail -4 "$OUTDIR/mpi_cupy_$n.log"
  done | tee "$OUTDIR/mpi_cupy.txt"
  "$PY" - "$OUTDIR" <<'EOF' 2>&1 | tee -a "$OUTDIR/mpi_cupy.txt"
import sys

import numpy as np

import prosper

a, b = (prosper.load(f"{sys.argv[1]}/mpi_cupy_{n}.h5") for n in (1, 2))
diff = float(np.abs(a.W_ - b.W_).max())
print(f"cupy backend, 1 vs 2 MPI ranks, 20 iterations: max |W1 - W2| = {diff:.3e}")
sys.exit(0 if diff < 1e-8 else 1)
EOF
  mpi_rc=${PIPESTATUS[0]}
else
  echo "mpiexec not found: MPI step skipped" | tee "$OUTDIR/mpi_cupy.txt"
fi

echo "tests rc=$tests_rc bench rc=$bench_rc fit rc=$fit_rc mpi rc=$mpi_rc" | tee -a "$OUTDIR/gpu_env.txt"
exit $(( tests_rc != 0 || bench_rc != 0 || fit_rc != 0 || mpi_rc != 0 ))
