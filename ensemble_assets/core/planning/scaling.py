"""Measurements for sizing: the real size of a quantized matrix, and what training on it costs.

``measure_matrix`` runs in a fresh Python process (``python -m ensemble_assets.core.planning.scaling``,
request as JSON on stdin, result as JSON on stdout), so nothing else the caller holds is counted:
the child warms XGBoost up on a tiny matrix, takes its resident set size (RSS), builds the
subset's ``QuantileDMatrix`` through the training data path (``training.load_subset``), and
reports two sizes: the RSS the process grew by (``rss_growth_bytes``: the matrix, the side arrays
and whatever heap the allocator kept from the streamed batches, which varies run to run by ~15%)
and the RSS given back when the matrix alone is freed (``matrix_bytes_measured``: the matrix
itself, stable to a few KiB). Optionally it first trains a few boosting rounds to time one round
and to see the peak RSS of training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.planning.capacity import peak_rss_bytes
from ensemble_assets.core.planning.plan import BYTES_PER_CELL, matrix_bytes
from ensemble_assets.core.training.matrix import load_subset
from ensemble_assets.core.training.settings import TrainingSettings, xgb_params


def _rss_settled() -> int:
    """RSS after returning freed memory to the OS (Python, Arrow's pool, glibc's heap)."""
    import ctypes
    import gc

    import psutil
    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass
    return int(psutil.Process().memory_info().rss)



def _measure_here(req: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import xgboost as xgb

    ds = open_dataset(req["dataset"])
    settings = TrainingSettings(**req["settings"])
    genes, features, fill = req["genes"], req["features"], req["fill"]
    # warm-up: XGBoost's thread pool and lazily created buffers, Arrow's readers
    warm = load_subset(ds, genes[:1], features, fill, settings)
    warm.dmatrix.set_label(np.zeros(len(warm.label), dtype=np.float32))
    xgb.train(xgb_params(settings), warm.dmatrix, 1)
    del warm
    before = _rss_settled()
    t0 = time.perf_counter()
    data = load_subset(ds, genes, features, fill, settings)
    load_s = time.perf_counter() - t0
    side = sum(a.nbytes for a in (data.label, data.gene_idx, data.position, data.base))
    after = _rss_settled()
    n, f = len(data.label), len(features)
    out: dict[str, Any] = {
        "genes": len(genes), "rows": n, "features": f, "parquet_passes": data.parquet_passes,
        "load_seconds": round(load_s, 3),
        "rss_before_bytes": before, "rss_after_bytes": after, "rss_growth_bytes": after - before,
        "side_array_bytes": side,
        "matrix_bytes_estimated": int(n * f * BYTES_PER_CELL),
        "matrix_plus_side_bytes_estimated": matrix_bytes(n, f),
        "peak_rss_after_load_bytes": peak_rss_bytes(),
    }
    rounds = int(req.get("rounds", 0))
    if rounds:
        data.dmatrix.set_label((data.label == 1).astype(np.float32))
        t = time.perf_counter()
        booster = xgb.train(xgb_params(settings), data.dmatrix, rounds)
        out.update(train_rounds=booster.num_boosted_rounds(),
                   seconds_per_round=round((time.perf_counter() - t) / rounds, 4),
                   peak_rss_bytes=peak_rss_bytes())
        del booster
    with_matrix = _rss_settled()
    data.dmatrix = None                     # the side arrays stay; only the matrix is released
    released = with_matrix - _rss_settled()
    out.update(matrix_bytes_measured=released, bytes_per_cell_measured=round(released / max(n * f, 1), 4))
    return out


def measure_matrix(dataset: str | Path, genes: Sequence[str], features: Sequence[str], fill: Mapping[str, float],
                   settings: TrainingSettings = TrainingSettings(), rounds: int = 0,
                   python: str = sys.executable, timeout: float | None = None) -> dict[str, Any]:
    """Build the subset's quantized matrix in a fresh process and report its measured size next
    to ``planning``'s estimate (and, with ``rounds``, the seconds per boosting round and the
    peak RSS of training on it)."""
    req = {"dataset": str(dataset), "genes": list(genes), "features": list(features),
           "fill": {f: float(fill[f]) for f in features}, "settings": asdict(settings), "rounds": rounds}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)   # the same package, installed or not
    proc = subprocess.run([python, "-m", "ensemble_assets.core.planning.scaling"], input=json.dumps(req), text=True,
                          capture_output=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"matrix measurement failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    result = _measure_here(json.loads(sys.stdin.read()))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
