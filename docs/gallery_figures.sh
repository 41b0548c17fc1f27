#!/usr/bin/env bash
# Regenerate the stored gallery figures in docs/_static/gallery/ by running each example with
# its own --plot option (or `prosper plot` for the job-file demo). The docs build shows these
# stored figures instead of running the slow examples (minutes each on a 2-core machine).
#
#   bash docs/gallery_figures.sh            # from the repository root, with ProSper installed
#
# Takes about 15 minutes on a 2-core machine; commit the PNGs it writes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=docs/_static/gallery
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
export MPLBACKEND=Agg OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

"$PY" -m prosper fit examples/bsc_bars.toml --out "$TMP/bsc_bars.h5" --overwrite
"$PY" -m prosper plot "$TMP/bsc_bars.h5" -o "$OUT/bsc_bars.png"
for example in tsc_bars dsc_bars mca_bars gsc_bars; do
    "$PY" "examples/$example.py" --plot "$OUT/$example.png"
done
"$PY" examples/gsc_patches.py --n-samples 4000 --H 32 --n-iter 10 --plot "$OUT/gsc_patches.png"
# sparse_coding_example.py writes sparse_coding_patches.png into the working directory
(cd "$TMP" && "$PY" "$OLDPWD/examples/sparse_coding_example.py")
cp "$TMP/sparse_coding_patches.png" "$OUT/sparse_coding_example.png"
