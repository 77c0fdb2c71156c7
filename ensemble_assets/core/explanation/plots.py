"""PNG plots of the ensemble SHAP analysis (matplotlib, object API: no GUI backend, no pyplot
state). The beeswarm uses the ``shap`` package's plot on the contributions computed by XGBoost."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.explanation.results import EnsembleShap, InstanceShap
from ensemble_assets.core.io import atomic_path

CLASS_COLORS = {"neither": "#8c8c8c", "donor": "#1f77b4", "acceptor": "#d62728"}
DPI = 90


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=DPI, layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _unit(scales: Sequence[str]) -> str:
    """The short name of the SHAP scale(s) (``log-odds``, ``softmax margin``) for axis labels."""
    return " / ".join(sorted({s.split(" (")[0] for s in scales}))


def plot_top_features(path: Path, agg: EnsembleShap, unit: str, top_n: int = 20) -> Path:
    """Top-N features by ensemble importance; each bar split into its classes' shares."""
    order = np.lexsort((np.asarray(agg.features), -agg.ensemble))[:top_n][::-1]
    fig = _figure(8, 0.32 * len(order) + 1.4)
    ax = fig.subplots()
    y = np.arange(len(order))
    left = np.zeros(len(order))
    for c, cname in enumerate(CLASSES):
        part = agg.per_class[c, order] / 3.0
        ax.barh(y, part, left=left, color=CLASS_COLORS[cname], label=cname)
        left += part
    ax.set_yticks(y, [agg.features[j] for j in order], fontsize=8)
    ax.set_xlabel(f"ensemble importance: mean over classes of weighted mean |SHAP| ({unit})")
    ax.set_title(f"Top {len(order)} features of the ensemble ({len(agg.keys)} instances × 3 classes)")
    ax.legend(loc="lower right", fontsize=8, title="class share")
    return _save(fig, path)


def plot_per_class(path: Path, agg: EnsembleShap, unit: str, top_n: int = 15) -> Path:
    fig = _figure(15, 0.3 * top_n + 1.4)
    axes = fig.subplots(1, 3)
    for c, (ax, cname) in enumerate(zip(axes, CLASSES)):
        v = agg.per_class[c]
        order = np.lexsort((np.asarray(agg.features), -v))[:top_n][::-1]
        ax.barh(np.arange(len(order)), v[order], color=CLASS_COLORS[cname])
        ax.set_yticks(np.arange(len(order)), [agg.features[j] for j in order], fontsize=8)
        ax.set_title(f"{cname} models: top {len(order)}")
        ax.set_xlabel(f"weighted mean |SHAP| ({unit})")
    return _save(fig, path)


def plot_beeswarm(path: Path, result: InstanceShap, cname: str, max_display: int = 20) -> Path:
    """SHAP summary (beeswarm) of one class output of one instance, from its stored top features."""
    import shap

    t = result.beeswarm.filter(pc.equal(result.beeswarm.column("class"), cname))
    feats = list(dict.fromkeys(t.column("feature").to_pylist()))
    if not feats:  # a booster without a single split
        fig = _figure(6, 1.5)
        fig.text(0.5, 0.5, f"the {cname} model of instance {result.key} uses no feature", ha="center")
        return _save(fig, path)
    n = len(t) // len(feats)
    values = t.column("shap").to_numpy().reshape(len(feats), n).T
    data = t.column("value").to_numpy().reshape(len(feats), n).T
    exp = shap.Explanation(values=values, data=data, feature_names=feats)
    fig = _figure(8, 0.3 * min(max_display, len(feats)) + 1.6)
    ax = fig.subplots()
    shap.plots.beeswarm(exp, max_display=max_display, ax=ax, show=False, plot_size=None,
                        group_remaining_features=False)
    ax.set_title(f"{cname} model of instance {result.key}\n{n} out-of-fold rows, top {len(feats)} features",
                 fontsize=10)
    ax.set_xlabel(f"SHAP value (contribution to the {_unit([result.summary['scale']])})")
    return _save(fig, path)


def plot_feature_type_share(path: Path, types: pa.Table) -> Path:
    """Share of importance per feature group, per class and for the ensemble (100% bars)."""
    import matplotlib

    rows = [r for r in types.to_pylist() if r["kind"] != "total"]
    totals = {r["group"]: r for r in types.to_pylist() if r["kind"] == "total"}
    scopes = [*CLASSES, "mean"]
    fig = _figure(9, 3.4)
    ax = fig.subplots()
    cmap_k, cmap_o = matplotlib.colormaps["Blues"], matplotlib.colormaps["Oranges"]
    kmers = [r for r in rows if r["kind"] == "kmer"]
    others = [r for r in rows if r["kind"] != "kmer"]
    left = np.zeros(len(scopes))
    for i, r in enumerate(kmers + others):
        shade = (cmap_k(0.45 + 0.5 * i / max(1, len(kmers))) if r["kind"] == "kmer"
                 else cmap_o(0.3 + 0.6 * (i - len(kmers)) / max(1, len(others))))
        v = np.asarray([r[f"share_{s}"] for s in scopes])
        ax.barh(np.arange(len(scopes)), v, left=left, color=shade, label=f"{r['group']} ({r['n_features']})")
        left += v
    labels = [f"{s if s != 'mean' else 'ensemble'}: k-mer {totals['k-mer (all)'][f'share_{s}']:.0%}" for s in scopes]
    ax.set_yticks(np.arange(len(scopes)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of total importance")
    ax.set_title("k-mer vs non-k-mer features (k-mer groups in blue, others in orange)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="group (features)")
    return _save(fig, path)


def plot_instance_agreement(path: Path, agreement: pa.Table, keys: list[str]) -> Path:
    """Spearman rank agreement of the instances' importances, per class and for the mean."""
    scopes = [*CLASSES, "ensemble"]
    fig = _figure(3.2 * len(scopes), 3.2)
    axes = fig.subplots(1, len(scopes))
    pos = {k: i for i, k in enumerate(keys)}
    rows = agreement.to_pylist()
    im = None
    for ax, scope in zip(axes, scopes):
        M = np.eye(len(keys))
        for r in rows:
            if r["scope"] == scope:
                a, b = pos[r["instance_a"]], pos[r["instance_b"]]
                M[a, b] = M[b, a] = np.nan if r["spearman"] is None else r["spearman"]
        im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(keys)), [k.split("-")[0] for k in keys], fontsize=7, rotation=90)
        ax.set_yticks(range(len(keys)), [k.split("-")[0] for k in keys], fontsize=7)
        for a in range(len(keys)):
            for b in range(len(keys)):
                ax.text(b, a, f"{M[a, b]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if M[a, b] < 0.6 else "black")
        ax.set_title(scope, fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.8, label="Spearman")
    return _save(fig, path)


def write_shap_plots(out_dir: Path, agg: EnsembleShap, best: InstanceShap, types: pa.Table,
                     agreement: pa.Table, scales: Sequence[str], top_n: int = 20) -> dict[str, Path]:
    """Every SHAP plot; ``scales``: the scales of the instances' SHAP values (the summary's ``scale``)."""
    out_dir = Path(out_dir)
    unit = _unit(scales)
    files = {
        "top_features": plot_top_features(out_dir / "top_features.png", agg, unit, top_n),
        "per_class_top_features": plot_per_class(out_dir / "per_class_top_features.png", agg, unit,
                                                 min(top_n, 15)),
        "beeswarm_donor": plot_beeswarm(out_dir / "beeswarm_donor.png", best, "donor", top_n),
        "beeswarm_acceptor": plot_beeswarm(out_dir / "beeswarm_acceptor.png", best, "acceptor", top_n),
        "feature_type_share": plot_feature_type_share(out_dir / "feature_type_share.png", types),
    }
    if len(agg.keys) > 1:
        files["instance_agreement"] = plot_instance_agreement(out_dir / "instance_agreement.png", agreement, agg.keys)
    return files
