"""Integrity audits behind the asset checks: gene-disjoint folds inside each instance, and single
features that (nearly) separate the classes on their own — the signature of label leakage such
as MetaSpliceAI's back-filled structural columns."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow.parquet as pq

from ensemble_assets.core.data.contract import ParquetDataset
from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.data.streaming import iter_subset_batches


def fold_violations(instance_dir: str | Path) -> list[str]:
    """Everything that breaks "each gene in exactly one fold" for one instance directory:
    a gene listed twice in folds.parquet, out-of-fold rows of one gene in two folds or in a fold
    other than its own, and a gene used for early stopping of the fold it is evaluated in.
    Returns human-readable problems naming the genes (empty: none)."""
    d = Path(instance_dir)
    problems: list[str] = []
    folds = pq.read_table(d / "folds.parquet").to_pydict()
    genes, fold_of = folds["gene_id"], folds["fold"]
    dup = sorted(g for g, n in Counter(genes).items() if n > 1)
    if dup:
        problems.append(f"{len(dup)} gene(s) listed more than once in folds.parquet: {', '.join(dup[:10])}")
    own = dict(zip(genes, fold_of))
    es = folds.get("early_stopping_in_folds")
    if es is not None:
        bad = sorted(g for g, f, s in zip(genes, fold_of, es) if s and str(f) in s.split(","))
        if bad:
            problems.append(f"{len(bad)} gene(s) used for early stopping of their own evaluation fold: "
                            f"{', '.join(bad[:10])}")
    oof = pq.read_table(d / "oof_predictions.parquet", columns=["gene_id", "fold"]).to_pydict()
    per_gene: dict[str, set[int]] = {}
    for g, f in zip(oof["gene_id"], oof["fold"]):
        per_gene.setdefault(g, set()).add(int(f))
    multi = sorted(g for g, fs in per_gene.items() if len(fs) > 1)
    if multi:
        problems.append(f"{len(multi)} gene(s) have out-of-fold rows in two or more folds: "
                        + ", ".join(f"{g} (folds {sorted(per_gene[g])})" for g in multi[:10]))
    moved = sorted(g for g, fs in per_gene.items() if len(fs) == 1 and g in own and next(iter(fs)) != own[g])
    if moved:
        problems.append(f"{len(moved)} gene(s) predicted out-of-fold by a fold other than their own: "
                        f"{', '.join(moved[:10])}")
    unknown = sorted(set(per_gene) - set(own))
    if unknown:
        problems.append(f"{len(unknown)} gene(s) with out-of-fold rows but no fold: {', '.join(unknown[:10])}")
    return problems


def single_feature_auc(X: np.ndarray, y: np.ndarray, chunk: int = 128) -> np.ndarray:
    """Per column, the ROC-AUC of the column alone as a score for the binary target ``y``, in
    whichever direction separates better (max(AUC, 1 − AUC)); ties count half (average ranks)."""
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    out = np.full(X.shape[1], 0.5)
    if not n1 or not n0:
        return out
    for a in range(0, X.shape[1], chunk):
        r = rankdata(X[:, a:a + chunk], axis=0)
        auc = (r[y].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)
        out[a:a + chunk] = np.clip(np.maximum(auc, 1 - auc), 0.5, 1.0)  # float sums can overshoot 1
    return out


def separating_features(ds: ParquetDataset, genes: Sequence[str], features: Sequence[str],
                        fill: Mapping[str, float], min_auc: float = 0.99,
                        batch_rows: int = 32_768) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Features that alone reach ROC-AUC ≥ ``min_auc`` for splice-vs-not, donor-vs-rest or
    acceptor-vs-rest on the rows of ``genes`` (a gene sample). Returns (offenders sorted by AUC,
    the best AUC of any feature and the sample's size)."""
    Xs, ys = [], []
    for b in iter_subset_batches(ds, genes, features, fill, batch_rows):
        Xs.append(b.X)
        ys.append(b.label)
    if not Xs:
        return [], {"rows": 0, "genes": 0, "max_auc": None, "max_auc_feature": None}
    X, y = np.concatenate(Xs), np.concatenate(ys).astype(np.int64)
    targets = {"splice": y > 0, **{f"{c}_vs_rest": y == k for k, c in enumerate(CLASSES) if k}}
    aucs = {t: single_feature_auc(X, yt) for t, yt in targets.items()}
    best = np.max(np.column_stack(list(aucs.values())), axis=1)
    offenders = []
    for j in np.flatnonzero(best >= min_auc):
        t = max(aucs, key=lambda k: aucs[k][j])
        offenders.append({"feature": features[j], "auc": float(best[j]), "target": t})
    offenders.sort(key=lambda r: -r["auc"])
    top = int(np.argmax(best))
    return offenders, {"rows": int(len(y)), "genes": len(set(genes)), "max_auc": float(best[top]),
                       "max_auc_feature": features[top]}
