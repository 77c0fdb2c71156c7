"""Classification metrics for splice-site models. Callers pass rows of genes the model did not
train on (out-of-fold or holdout) and label the result with where it came from."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from ensemble_assets.core.data.schema import CLASSES


def _safe(fn, *args, **kw) -> float | None:
    try:
        v = float(fn(*args, **kw))
    except ValueError:
        return None
    return v if np.isfinite(v) else None


def topk_accuracy(gene_idx: np.ndarray, y_true: np.ndarray, score: np.ndarray) -> float | None:
    """Gene-level top-k accuracy: per gene, k = its number of true positives; the k highest
    scoring rows of the gene, negatives included, are predicted; hits / sum of k over genes."""
    gene_idx = np.asarray(gene_idx)
    y_true = np.asarray(y_true).astype(bool)
    order = np.lexsort((-np.asarray(score, dtype=np.float64), gene_idx))
    g, t = gene_idx[order], y_true[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    counts = np.diff(np.r_[starts, len(g)])
    k = np.add.reduceat(t.astype(np.int64), starts) if len(g) else np.array([], dtype=np.int64)
    rank = np.arange(len(g)) - np.repeat(starts, counts)
    hits = int((t & (rank < np.repeat(k, counts))).sum())
    total = int(k.sum())
    return hits / total if total else None


def binary_splice_metrics(y_splice: np.ndarray, p_splice: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    pred = p_splice >= threshold
    y = y_splice.astype(bool)
    return {
        "threshold": threshold,
        "f1": _safe(f1_score, y, pred, zero_division=0),
        "fp": int((pred & ~y).sum()),
        "fn": int((~pred & y).sum()),
        "roc_auc": _safe(roc_auc_score, y, p_splice),
        "ap": _safe(average_precision_score, y, p_splice),
    }


def evaluate(y: np.ndarray, proba: np.ndarray, gene_idx: np.ndarray,
             base: np.ndarray | None = None, threshold: float = 0.5,
             base_threshold: float | None = None, splice_score: np.ndarray | None = None) -> dict[str, Any]:
    """All evaluation metrics (docs/evaluation.md) for 3-class probabilities ``proba`` (n×3, neither/donor/acceptor).

    ``base``: the base model's scores (n×3) for the base-vs-meta splice comparison on splice
    probability (donor + acceptor): the meta model at ``threshold``, the base model at
    ``base_threshold`` (default: the same threshold). ``splice_score``: the model's splice score
    when it is not ``proba``'s donor + acceptor (the base model: its unnormalised scores)."""
    y = np.asarray(y, dtype=np.int64)
    pred = proba.argmax(axis=1)
    out: dict[str, Any] = {"rows": int(len(y)), "genes": int(len(np.unique(gene_idx)))}
    out["macro_f1"] = _safe(f1_score, y, pred, labels=[0, 1, 2], average="macro", zero_division=0)
    aps = []
    for c, name in enumerate(CLASSES):
        yc = y == c
        out[f"f1_{name}"] = _safe(f1_score, yc, pred == c, zero_division=0)
        ap = _safe(average_precision_score, yc, proba[:, c]) if yc.any() else None
        out[f"ap_{name}"] = ap
        if ap is not None:
            aps.append(ap)
        if c:
            out[f"topk_{name}"] = topk_accuracy(gene_idx, yc, proba[:, c])
    out["macro_ap"] = float(np.mean(aps)) if aps else None
    y_splice = y > 0
    p_splice = proba[:, 1] + proba[:, 2] if splice_score is None else np.asarray(splice_score, dtype=np.float64)
    out["topk_splice"] = topk_accuracy(gene_idx, y_splice, p_splice)
    meta = binary_splice_metrics(y_splice, p_splice, threshold)
    out.update({f"splice_{k}": v for k, v in meta.items()})
    if base is not None and np.isfinite(base).all():
        b = binary_splice_metrics(y_splice, base[:, 1] + base[:, 2],
                                  threshold if base_threshold is None else base_threshold)
        out.update({f"base_splice_{k}": v for k, v in b.items()})
        out["delta_fp"] = meta["fp"] - b["fp"]
        out["delta_fn"] = meta["fn"] - b["fn"]
    return out


def binary_log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Binary log loss, probabilities clipped to [1e-7, 1 - 1e-7] (the early-stopping criterion)."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def multiclass_log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Multi-class log loss of n×3 probabilities ``p`` and integer labels ``y``."""
    p = np.clip(np.asarray(p, dtype=np.float64)[np.arange(len(y)), np.asarray(y, dtype=np.int64)], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))
