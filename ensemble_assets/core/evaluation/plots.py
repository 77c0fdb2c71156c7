"""PNG plots of the evaluation (matplotlib, Agg backend): ROC and PR curves base vs meta per class,
reliability diagrams, learning curves per instance, instance comparison. Each function writes one
PNG atomically and returns its path; every title says which rows the figure is computed on."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.io import atomic_path

DPI = 80


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def png_data_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _targets(y: np.ndarray, proba: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    y = np.asarray(y)
    return [("donor", y == 1, proba[:, 1]), ("acceptor", y == 2, proba[:, 2]),
            ("splice (donor+acceptor)", y > 0, proba[:, 1] + proba[:, 2])]


def roc_pr_curves(y: np.ndarray, models: Mapping[str, np.ndarray], path: str | Path, scope: str) -> Path:
    """ROC (top) and precision-recall (bottom) curves per class, one line per model (n×3 probabilities)."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(13, 8), layout="constrained")
    for name, proba in models.items():
        for j, (label, yt, score) in enumerate(_targets(y, proba)):
            if not yt.any() or yt.all():
                continue
            fpr, tpr, _ = roc_curve(yt, score)
            axes[0, j].plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
            prec, rec, _ = precision_recall_curve(yt, score)
            ap = float(np.sum(np.diff(rec[::-1]) * prec[::-1][1:]))
            axes[1, j].plot(rec, prec, label=f"{name} (AP {ap:.3f})")
            axes[0, j].set_title(f"ROC — {label}")
            axes[1, j].set_title(f"PR — {label}")
    for j in range(3):
        axes[0, j].plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
        axes[0, j].set_xlabel("false positive rate")
        axes[0, j].set_ylabel("true positive rate")
        axes[1, j].set_xlabel("recall")
        axes[1, j].set_ylabel("precision")
        for i in range(2):
            axes[i, j].legend(loc="lower right" if i == 0 else "lower left", fontsize=8)
    fig.suptitle(scope, fontsize=9)
    return _save(fig, path)


def reliability_diagram(bins: Sequence[Mapping[str, Any]], path: str | Path, scope: str,
                        ece: Mapping[tuple[str, str], float] | None = None, strategy: str = "uniform") -> Path:
    """Observed fraction of positives vs mean predicted probability per bin, one panel per class,
    one line per kind (raw / calibrated / base). ``bins``: rows of ``calibration_report``."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3), layout="constrained")
    kinds = sorted({b["kind"] for b in bins})
    for j, cname in enumerate(CLASSES):
        ax = axes[j]
        ax.plot([0, 1], [0, 1], color="grey", lw=0.7, ls=":")
        for kind in kinds:
            rows = [b for b in bins if b["class"] == cname and b["kind"] == kind and b["strategy"] == strategy]
            if not rows:
                continue
            x = [b["mean_predicted"] for b in rows]
            yv = [b["fraction_positive"] for b in rows]
            e = (ece or {}).get((cname, kind))
            ax.plot(x, yv, marker="o", ms=3, label=f"{kind}" + (f" (ECE {e:.4f})" if e is not None else ""))
        ax.set_title(f"{cname} vs rest ({strategy} bins)")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("fraction positive")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(scope, fontsize=9)
    return _save(fig, path)


def learning_curves(curves: Mapping[str, Mapping[str, np.ndarray]], path: str | Path) -> Path:
    """Per booster (a class, or a kind's one multi-class model), the log loss per boosting iteration
    of each instance, averaged over its fold models: validation genes (solid; the early-stopping
    signal) and training rows (dashed)."""
    plt = _plt()
    # one panel per booster: a class for one-vs-rest kinds, else the kind's one multi-class model
    found = {str(b) for c in curves.values() for b in np.unique(np.asarray(c["class"], dtype=object))}
    boosters = [b for b in CLASSES if b in found] + sorted(found - set(CLASSES))
    panels = max(len(boosters), 1)
    fig, axes = plt.subplots(1, panels, figsize=(4.4 * panels + 0.2, 4.3), layout="constrained", squeeze=False)
    axes = axes[0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, c) in enumerate(curves.items()):
        cls = np.asarray(c["class"], dtype=object)
        it = np.asarray(c["iteration"])
        for j, cname in enumerate(boosters):
            m = cls == cname
            if not m.any():
                continue
            n = int(it[m].max()) + 1
            for metric, ls in (("val_logloss", "-"), ("train_logloss", "--")):
                v = np.asarray(c[metric])[m]
                mean = np.bincount(it[m], weights=v, minlength=n) / np.maximum(np.bincount(it[m], minlength=n), 1)
                axes[j].plot(np.arange(n), mean, ls=ls, color=colors[i % len(colors)],
                             label=key if metric == "val_logloss" else None, lw=1)
    for j, cname in enumerate(boosters):
        axes[j].set_title(f"{cname} booster")
        axes[j].set_xlabel("boosting iteration")
        axes[j].set_ylabel("log loss (mean over folds)")
        axes[j].legend(fontsize=7)
    fig.suptitle("learning curves per instance — solid: validation genes (early stopping), dashed: training rows",
                 fontsize=9)
    return _save(fig, path)


def instance_comparison(rows: Sequence[Mapping[str, Any]], path: str | Path, scope: str,
                        metrics: Sequence[tuple[str, str]] = (("oof_splice_f1", "out-of-fold splice F1"),
                                                              ("eval_splice_f1", "evaluation splice F1"),
                                                              ("eval_splice_ap", "evaluation splice AP"),
                                                              ("eval_macro_f1", "evaluation macro F1"))) -> Path:
    """Grouped bars, one group per model (instances, consolidated, base), one bar per metric."""
    plt = _plt()
    names = [str(r["model"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names) + 2), 4.5))
    width = 0.8 / len(metrics)
    x = np.arange(len(names))
    for i, (key, label) in enumerate(metrics):
        vals = [r.get(key) if r.get(key) is not None else np.nan for r in rows]
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x, names, rotation=20, fontsize=8)
    lo = np.nanmin([r.get(k) for r in rows for k, _ in metrics if r.get(k) is not None] or [0.0])
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(scope, fontsize=9)
    return _save(fig, path)
