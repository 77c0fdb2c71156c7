"""The ensemble aggregate of per-instance SHAP importances and its tables.

The aggregate weights each instance by the consolidated model's own normalised weight (no extra
1/N): per class ``I_c(f) = Σ_i w_i · mean|SHAP|_{i,c}(f)``, the ensemble importance is the mean
of the three classes. Features are matched by name; a feature an instance does not have
contributes 0 for that instance. In a mixed ensemble the members' scales differ (log-odds vs
softmax margin), which the recorded methods say. Also: the rank agreement of the instances, the
importance by feature type, the MetaSpliceAI legacy CSV and the summary."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ensemble_assets.core.data.schema import CLASSES, KMER_PATTERN, feature_family, is_kmer
from ensemble_assets.core.explanation.results import EnsembleShap, InstanceShap
from ensemble_assets.core.explanation.settings import AGGREGATION, SAMPLE_SCOPE, ShapSettings
from ensemble_assets.core.io import atomic_path

LEGACY_CSV = "shap_importance_incremental.csv"
LEGACY_COLUMNS = ("feature", "importance_neither", "importance_donor", "importance_acceptor",
                  "importance_mean", "shap_importance")


def feature_group(name: str) -> str:
    """``{k}-mer`` for k-mer counts (any k), else the data-contract family of docs/architecture.md#column-families (base_score, context, …)."""
    m = KMER_PATTERN.match(name)
    return f"{m.group(1)}-mer" if m else feature_family(name)


def aggregate(results: Mapping[str, InstanceShap], weights: Mapping[str, float]) -> EnsembleShap:
    """Weighted aggregate over instances × classes, features matched by name."""
    keys = list(results)
    w = np.asarray([float(weights[k]) for k in keys], dtype=np.float64)
    if not len(w) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"instance weights must be non-negative with a positive sum, got {w.tolist()}")
    w = w / w.sum()
    union = sorted(set().union(*[set(r.features) for r in results.values()]))
    col = {f: j for j, f in enumerate(union)}
    M = np.zeros((len(keys), 3, len(union)))
    present = np.zeros((len(keys), len(union)), dtype=bool)
    for i, k in enumerate(keys):
        idx = np.asarray([col[f] for f in results[k].features], dtype=np.int64)
        M[i][:, idx] = results[k].mean_abs
        present[i, idx] = True
    per_class = np.einsum("i,icu->cu", w, M)
    return EnsembleShap(keys, w, union, M, present, per_class, per_class.mean(axis=0),
                        [results[k].method for k in keys])


def _ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v, axis=-1)


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else None


def rank_agreement(agg: EnsembleShap, top_n: int = 20) -> pa.Table:
    """For every pair of instances, per class and for the mean over classes: the Spearman
    correlation of their importances over the union of features (``spearman``), the same over
    the union of the two instances' top-N features only (``spearman_top``: the long tail of
    near-zero k-mers does not dominate it) and the overlap of their top-N features."""
    rows: dict[str, list] = {"scope": [], "instance_a": [], "instance_b": [], "spearman": [],
                             "spearman_top": [], "top_n_overlap": []}
    views = {c: agg.per_instance[:, j, :] for j, c in enumerate(CLASSES)}
    views["ensemble"] = agg.per_instance.mean(axis=1)
    I = len(agg.keys)
    for scope, V in views.items():
        tops = [np.argsort(-V[i], kind="stable")[:top_n] for i in range(I)]
        for a in range(I):
            for b in range(a + 1, I):
                both = np.union1d(tops[a], tops[b])
                rows["scope"].append(scope)
                rows["instance_a"].append(agg.keys[a])
                rows["instance_b"].append(agg.keys[b])
                rows["spearman"].append(_spearman(V[a], V[b]))
                rows["spearman_top"].append(_spearman(V[a, both], V[b, both]))
                rows["top_n_overlap"].append(len(np.intersect1d(tops[a], tops[b])) / max(1, min(top_n, V.shape[1])))
    return pa.table({"scope": pa.array(rows["scope"], pa.string()),
                     "instance_a": pa.array(rows["instance_a"], pa.string()),
                     "instance_b": pa.array(rows["instance_b"], pa.string()),
                     "spearman": pa.array(rows["spearman"], pa.float64()),
                     "spearman_top": pa.array(rows["spearman_top"], pa.float64()),
                     "top_n_overlap": pa.array(rows["top_n_overlap"], pa.float64())})


def ensemble_table(agg: EnsembleShap) -> pa.Table:
    order = np.lexsort((np.asarray(agg.features), -agg.ensemble))
    feats = [agg.features[j] for j in order]
    kmer_k = [int(KMER_PATTERN.match(f).group(1)) if is_kmer(f) else None for f in feats]
    return pa.table({
        "feature": pa.array(feats, pa.string()),
        "group": pa.array([feature_group(f) for f in feats], pa.string()),
        "is_kmer": pa.array([k is not None for k in kmer_k]), "kmer_k": pa.array(kmer_k, pa.int32()),
        **{f"importance_{c}": agg.per_class[j, order] for j, c in enumerate(CLASSES)},
        "importance_mean": agg.ensemble[order],
        "rank": np.arange(1, len(feats) + 1, dtype=np.int32),
        "n_instances": agg.present[:, order].sum(axis=0).astype(np.int32),
    })


def instance_table(agg: EnsembleShap) -> pa.Table:
    I, U = len(agg.keys), len(agg.features)
    return pa.table({
        "partition_key": pa.array(np.repeat(agg.keys, U).tolist(), pa.string()),
        "method": pa.array(np.repeat(agg.methods, U).tolist(), pa.string()),
        "weight": np.repeat(agg.weights, U),
        "feature": pa.array(agg.features * I, pa.string()),
        "present": agg.present.ravel(),
        **{f"importance_{c}": agg.per_instance[:, j, :].ravel() for j, c in enumerate(CLASSES)},
        "importance_mean": agg.per_instance.mean(axis=1).ravel(),
    })


def feature_type_table(agg: EnsembleShap) -> pa.Table:
    """Importance by feature group: each k (``3-mer``, ``5-mer``, …) and each non-k-mer family,
    plus the ``k-mer (all)`` / ``non-k-mer (all)`` totals, with each group's share per class."""
    groups = np.asarray([feature_group(f) for f in agg.features], dtype=object)
    kmer = np.asarray([is_kmer(f) for f in agg.features], dtype=bool)
    vals = np.vstack([agg.per_class, agg.ensemble[None, :]])            # (4, U)
    totals = vals.sum(axis=1)
    names = sorted(set(groups.tolist()), key=lambda g: (not g.endswith("-mer"), g))
    masks = [(g, "kmer" if g.endswith("-mer") else "non_kmer", groups == g) for g in names]
    masks += [("k-mer (all)", "total", kmer), ("non-k-mer (all)", "total", ~kmer)]
    cols: dict[str, list] = {"group": [], "kind": [], "n_features": []}
    scopes = [*CLASSES, "mean"]
    for s in scopes:
        cols[f"importance_{s}"] = []
        cols[f"share_{s}"] = []
    for g, kind, m in masks:
        cols["group"].append(g)
        cols["kind"].append(kind)
        cols["n_features"].append(int(m.sum()))
        for j, s in enumerate(scopes):
            v = float(vals[j, m].sum())
            cols[f"importance_{s}"].append(v)
            cols[f"share_{s}"].append(v / totals[j] if totals[j] > 0 else 0.0)
    return pa.table(cols)


def legacy_table(agg: EnsembleShap) -> pa.Table:
    """The MetaSpliceAI ``shap_importance_incremental.csv`` layout, most important first."""
    t = ensemble_table(agg)
    return pa.table({"feature": t.column("feature"),
                     **{f"importance_{c}": t.column(f"importance_{c}") for c in CLASSES},
                     "importance_mean": t.column("importance_mean"),
                     "shap_importance": t.column("importance_mean")})


def write_legacy_csv(path: str | Path, agg: EnsembleShap) -> Path:
    """Plain CSV (header, one row per feature, full float precision), written atomically."""
    t = legacy_table(agg)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(LEGACY_COLUMNS)
            w.writerows(zip(*[t.column(c).to_pylist() for c in LEGACY_COLUMNS]))
    return Path(path)


def _top(names: Sequence[str], values: np.ndarray, n: int) -> list[dict[str, Any]]:
    order = np.lexsort((np.asarray(names, dtype=object).astype(str), -values))[:n]
    return [{"feature": names[j], "importance": float(values[j])} for j in order]


def summarize(agg: EnsembleShap, results: Mapping[str, InstanceShap], agreement: pa.Table,
              types: pa.Table, settings: ShapSettings, members: Sequence[dict[str, Any]]) -> dict[str, Any]:
    n = settings.top_n
    best = agg.keys[int(np.argmax(agg.weights))]
    ag = agreement.to_pylist()
    agree = {}
    for scope in [*CLASSES, "ensemble"]:
        sp = [r["spearman"] for r in ag if r["scope"] == scope and r["spearman"] is not None]
        st = [r["spearman_top"] for r in ag if r["scope"] == scope and r["spearman_top"] is not None]
        ov = [r["top_n_overlap"] for r in ag if r["scope"] == scope]
        agree[scope] = {"spearman_mean": float(np.mean(sp)) if sp else None,
                        "spearman_min": float(np.min(sp)) if sp else None,
                        f"spearman_top_{n}_mean": float(np.mean(st)) if st else None,
                        f"top_{n}_overlap_mean": float(np.mean(ov)) if ov else None}
    ty = {r["group"]: r for r in types.to_pylist()}
    methods = {k: results[k].summary["method"] for k in agg.keys}
    return {
        "analysis_type": "comprehensive_ensemble_shap",
        "method": next(iter(methods.values())) if len(set(methods.values())) == 1 else
        "mixed (per instance: instance_methods)", "scale": sorted({results[k].summary["scale"] for k in agg.keys}),
        "instance_methods": methods, "sample_scope": SAMPLE_SCOPE, "aggregation": AGGREGATION,
        "n_instances": len(agg.keys),
        "n_models": sum(3 if results[k].summary.get("model_type", "xgboost_ovr") == "xgboost_ovr" else 1
                        for k in agg.keys),
        "n_outputs": 3 * len(agg.keys), "n_features": len(agg.features),
        "rows_per_instance": {k: results[k].summary["rows"] for k in agg.keys},
        "instance_weights": dict(zip(agg.keys, agg.weights.tolist())),
        "consolidated_weights": {m["partition_key"]: m["weight"] for m in members},
        "best_instance": best,
        "top_features": {"ensemble": _top(agg.features, agg.ensemble, n),
                         **{c: _top(agg.features, agg.per_class[j], n) for j, c in enumerate(CLASSES)}},
        "feature_type_analysis": {
            "kmer_share": {s: ty["k-mer (all)"][f"share_{s}"] for s in [*CLASSES, "mean"]},
            "non_kmer_share": {s: ty["non-k-mer (all)"][f"share_{s}"] for s in [*CLASSES, "mean"]},
            "n_kmer_features": ty["k-mer (all)"]["n_features"],
            "n_non_kmer_features": ty["non-k-mer (all)"]["n_features"],
            "groups": {r["group"]: {"n_features": r["n_features"], "share_mean": r["share_mean"]}
                       for r in types.to_pylist() if r["kind"] != "total"},
        },
        "instance_agreement": agree,
        "additivity": {"tolerance": settings.max_additivity_error,
                       "max_error": max(max(r.additivity_error) for r in results.values()),
                       "per_instance": {k: dict(zip(CLASSES, results[k].additivity_error)) for k in agg.keys}},
        "settings": asdict(settings), "settings_signature": settings.signature(),
    }
