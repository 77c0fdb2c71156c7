#!/bin/bash
# The full 9,280-gene ensemble on one GPU, end to end, as recorded in BENCHMARKS.md.
#
# Runs on a GPU box that has numpy, pyarrow, scikit-learn and psutil but neither Dagster nor
# DuckDB. Prepare, on a machine with the project installed:
#   python -m benchmarks.instance data          # → data/bench/artifacts/{gene_inventory,feature_manifest}.parquet, dataset_profile.json
#   PKG=<folder>; mkdir -p $PKG/artifacts; cp -r ensemble_assets $PKG/; cp data/bench/artifacts/{gene_inventory.parquet,dataset_profile.json,feature_manifest.parquet} $PKG/artifacts/
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl xgboost==3.4.1
# then on the GPU box, from the folder holding .whl/ and $PKG:
#   PKG=<folder> OUT=<results folder> bash scripts/gpu_full_ensemble.sh
# The dataset is generated there (same DemoSpec, same bytes; checked gene by gene against the
# carried inventory), planned, trained (all instances at once, one process each, device cuda),
# consolidated, and the holdout genes are scored. Results: $OUT/gpu.json (progress while it runs:
# $OUT/gpu_progress.json); copy gpu.json to data/bench/results/ and run `bench report`.
set -u
PKG=${PKG:-.i6}
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc; free -g | head -2; df -h /tmp | tail -1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$(cd "$PKG" && pwd) PYTHONUNBUFFERED=1
python3 - <<'PY' || exit 4
import time, numpy as np, pyarrow, sklearn, psutil, xgboost as xgb
print("numpy", np.__version__, "pyarrow", pyarrow.__version__, "sklearn", sklearn.__version__, "xgboost", xgb.__version__,
      "cuda", xgb.build_info().get("USE_CUDA"))
X = np.random.default_rng(0).random((5000, 20), dtype=np.float32); y = (X[:, 0] > .5).astype(np.float32)
t = time.time()
b = xgb.train({"device": "cuda", "tree_method": "hist", "objective": "binary:logistic"}, xgb.QuantileDMatrix(X, y), 5)
print("smoke: host QuantileDMatrix trained on cuda in %.2fs" % (time.time() - t))
PY
echo "setup done at $(( $(date +%s) - T0 ))s"
# run from inside $PKG: a checkout's own ensemble_assets/ in the working directory would shadow it
(cd "$PKG" && python3 -m benchmarks.instance gpu --root /tmp/bench --artifacts artifacts --workers 16 --parallel 7 \
    --device cuda --deadline "${DEADLINE:-520}" --out "$OUT") 2>&1 | tee "$OUT/gpu.log"
echo "script wall $(( $(date +%s) - T0 ))s"
