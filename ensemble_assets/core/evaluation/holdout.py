"""Evaluation of the base model, every instance and the consolidated model, side by side, on
genes the evaluated model never trained on.

* With holdout genes (the plan's global holdout, which no instance trains on), every model is
  scored on the holdout rows. Decision thresholds on the splice probability are chosen on
  **out-of-fold** predictions (each instance: its own; the consolidated model: the members'
  out-of-fold predictions averaged with the ensemble weights; the base model: its scores on the
  same out-of-fold rows) and then applied, unchanged, to the holdout rows.
* Without holdout genes (``train_all_genes``) the figures are out-of-fold and labelled so; the
  thresholds are then cross-fitted: the rows of one gene group are thresholded with the value
  chosen on the other groups' rows, so a threshold never sees the rows it is reported on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ensemble_assets.core.data.contract import DatasetError, ParquetDataset
from ensemble_assets.core.data.schema import CLASSES, is_kmer
from ensemble_assets.core.data.streaming import iter_subset_batches
from ensemble_assets.core.evaluation.calibration_analysis import calibration_report
from ensemble_assets.core.evaluation.metrics import binary_splice_metrics, evaluate
from ensemble_assets.core.io import read_json
from ensemble_assets.core.model.ensemble import SPLICE_RULE, EnsembleModel, load_model
from ensemble_assets.core.training.calibration import calibrate_proba

HOLDOUT = "holdout"
OUT_OF_FOLD = "out-of-fold"


@dataclass(frozen=True)
class EvaluationSettings:
    ece_bins: int = 15
    ece_bound: float = 0.01            # calibrated per-class ECE (uniform bins) above this → warning check
    separation_auc: float = 0.99       # one feature alone with a one-vs-rest ROC-AUC ≥ this → flagged
    separation_sample_genes: int = 300
    threshold_groups: int = 5          # out-of-fold mode: gene groups for cross-fitted thresholds
    seed: int = 42
    batch_rows: int = 32_768


@dataclass
class ScoredRows:
    """Rows of genes a model did not train on, with that model's probabilities."""

    gene_id: np.ndarray                # (n,) object
    position: np.ndarray               # (n,) int64
    label: np.ndarray                  # (n,) int 0/1/2
    base: np.ndarray                   # (n, 3) base-model scores neither/donor/acceptor
    proba: np.ndarray                  # (n, 3) calibrated
    raw: np.ndarray | None = None      # (n, 3) uncalibrated one-vs-rest booster outputs
    group: np.ndarray | None = None    # (n,) gene group for cross-fitted thresholds
    splice: np.ndarray | None = None   # (n,) the splice score where it is not proba's donor + acceptor

    def __len__(self) -> int:
        return len(self.label)

    @property
    def gene_idx(self) -> np.ndarray:
        return np.unique(self.gene_id, return_inverse=True)[1]

    @property
    def y_splice(self) -> np.ndarray:
        return self.label > 0

    @property
    def p_splice(self) -> np.ndarray:
        return self.splice if self.splice is not None else self.proba[:, 1] + self.proba[:, 2]

    @property
    def base_splice(self) -> np.ndarray:
        """The base model's splice score: donor + acceptor as the dataset holds them (not renormalised),
        the one score every base-model threshold and figure uses."""
        return self.base[:, 1].astype(np.float64) + self.base[:, 2]

    def with_proba(self, proba: np.ndarray, raw: np.ndarray | None = None) -> "ScoredRows":
        return ScoredRows(self.gene_id, self.position, self.label, self.base, proba, raw, self.group)


# --------------------------------------------------------------------------- thresholds


def choose_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The threshold on ``score`` (predict positive where score ≥ threshold) that maximises F1
    on these rows. Callers pass out-of-fold rows, never the rows the threshold is reported on."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y, dtype=bool)
    if not y.any() or y.all():
        return 0.5
    prec, rec, thr = precision_recall_curve(y, np.asarray(score, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)[:-1]
    return float(thr[int(np.argmax(f1))])


def crossfit_thresholds(y: np.ndarray, score: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Per row, the F1-optimal threshold chosen on the rows of every *other* group."""
    group = np.asarray(group)
    out = np.empty(len(group), dtype=np.float64)
    for g in np.unique(group):
        here = group == g
        out[here] = choose_threshold(np.asarray(y)[~here], np.asarray(score)[~here])
    return out


def thresholds_by_gene(thresholds: np.ndarray, of: ScoredRows, to: ScoredRows) -> np.ndarray:
    """Per-row cross-fitted ``thresholds`` of the rows ``of`` carried to the rows ``to`` by gene (every
    row of a gene has its group's threshold), e.g. the base model's, chosen on the pooled out-of-fold
    rows, onto one instance's out-of-fold rows. Every gene of ``to`` must be among ``of``'s."""
    genes, first = np.unique(np.asarray(of.gene_id, dtype=object), return_index=True)
    at = np.searchsorted(genes, np.asarray(to.gene_id, dtype=object))
    if len(genes) == 0 or (at >= len(genes)).any() or (genes[np.minimum(at, len(genes) - 1)] != to.gene_id).any():
        raise ValueError("thresholds_by_gene: a gene of the target rows has no threshold")
    return np.asarray(thresholds, dtype=np.float64)[first][at]


def gene_groups(gene_id: np.ndarray, n_groups: int, seed: int) -> np.ndarray:
    """Seeded assignment of genes to ``n_groups`` groups; every row of a gene in one group."""
    genes, inv = np.unique(np.asarray(gene_id, dtype=object), return_inverse=True)
    perm = np.random.default_rng(seed).permutation(len(genes))
    return (perm % max(1, min(n_groups, len(genes))))[inv]


# --------------------------------------------------------------------------- reading predictions


def ensemble_members(model_dir: str | Path) -> list[dict[str, Any]]:
    """Members of a consolidated model (partition key, weight, directory); an instance directory
    is its own single member."""
    model_dir = Path(model_dir)
    manifest = read_json(model_dir / "manifest.json")
    if manifest["kind"] == "instance":
        return [{"partition_key": manifest["partition_key"], "weight": 1.0, "dir": model_dir}]
    members = manifest["members"]
    total = sum(m["weight"] for m in members)
    return [{"partition_key": m["partition_key"], "weight": m["weight"] / total, "dir": model_dir / m["path"]}
            for m in members]


def trained_genes(model_dir: str | Path) -> set[str]:
    """The genes a model trained on (every gene in a fold of any member; an instance: its own)."""
    return set().union(*[set(pq.read_table(Path(m["dir"]) / "folds.parquet", columns=["gene_id"]).column(0).to_pylist())
                         for m in ensemble_members(model_dir)])


def read_oof(instance_dir: str | Path) -> ScoredRows:
    """An instance's out-of-fold predictions (calibrated ones cross-fitted), fold as group."""
    t = pq.read_table(Path(instance_dir) / "oof_predictions.parquet")
    col = lambda prefix: np.column_stack([t.column(f"{prefix}{c}").to_numpy() for c in CLASSES]).astype(np.float64)
    return ScoredRows(
        gene_id=np.asarray(t.column("gene_id").to_pylist(), dtype=object),
        position=np.asarray(t.column("position").to_numpy(), dtype=np.int64),
        label=np.asarray(t.column("label").to_numpy(), dtype=np.int64),
        base=col("base_"), proba=col("p_"), raw=col("raw_"),
        group=np.asarray(t.column("fold").to_numpy(), dtype=np.int64))


def _ordinal_within_gene(codes: np.ndarray) -> np.ndarray:
    """0, 1, 2 … for the rows of each gene code, in row order."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
    counts = np.diff(np.r_[starts, len(codes)])
    ordinal = np.empty(len(codes), dtype=np.int64)
    ordinal[order] = np.arange(len(codes)) - np.repeat(starts, counts)
    return ordinal


def pool_oof(members: Sequence[tuple[float, ScoredRows]]) -> ScoredRows:
    """The members' out-of-fold predictions as one set of rows: where a gene is in several
    instances (the overlap), its rows' probabilities are averaged with the (renormalised)
    member weights. Rows of a gene are matched by their order within the gene, which the one
    data path keeps identical for every subset; labels and positions must agree."""
    if len(members) == 1:
        return replace(members[0][1], group=None)  # a copy: the caller sets its own groups
    genes = np.concatenate([r.gene_id for _, r in members])
    codes = np.unique(genes, return_inverse=True)[1]
    offsets = np.cumsum([0] + [len(r) for _, r in members])
    ordinal = np.concatenate([_ordinal_within_gene(codes[a:b]) for a, b in zip(offsets[:-1], offsets[1:])])
    key = codes.astype(np.int64) * (int(ordinal.max()) + 1) + ordinal
    uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
    w = np.concatenate([np.full(len(r), wt) for wt, r in members])
    wsum = np.bincount(inv, weights=w, minlength=len(uniq))

    def avg(name: str) -> np.ndarray:
        m = np.concatenate([getattr(r, name) for _, r in members])
        return np.column_stack([np.bincount(inv, weights=w * m[:, j], minlength=len(uniq)) / wsum for j in range(3)])

    label = np.concatenate([r.label for _, r in members])
    position = np.concatenate([r.position for _, r in members])
    for name, v in (("label", label), ("position", position)):
        lo = np.full(len(uniq), np.iinfo(np.int64).max)
        hi = np.full(len(uniq), np.iinfo(np.int64).min)
        np.minimum.at(lo, inv, v)
        np.maximum.at(hi, inv, v)
        if (lo != hi).any():
            g = genes[first[np.flatnonzero(lo != hi)[0]]]
            raise DatasetError(f"out-of-fold rows of gene {g} disagree between instances ({name}); "
                               "the instances were not trained on the same dataset")
    has_raw = all(r.raw is not None for _, r in members)
    return ScoredRows(gene_id=genes[first], position=position[first], label=label[first],
                      base=np.concatenate([r.base for _, r in members])[first],
                      proba=avg("proba"), raw=avg("raw") if has_raw else None)


def consolidated_oof(model_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, ScoredRows]]:
    """The members of ``model_dir`` and their out-of-fold rows by partition key, plus
    ``"consolidated"``: the members' rows pooled with the ensemble weights (``pool_oof``)."""
    members = ensemble_members(model_dir)
    oof = {m["partition_key"]: read_oof(m["dir"]) for m in members}
    oof["consolidated"] = pool_oof([(m["weight"], oof[m["partition_key"]]) for m in members])
    return members, oof


def oof_splice_threshold(rows: ScoredRows) -> float:
    """The splice threshold a model is evaluated and deployed at: F1-optimal on its out-of-fold rows."""
    return choose_threshold(rows.y_splice, rows.p_splice)


def operating_point(model_dir: str | Path) -> dict[str, Any]:
    """The consolidated model's operating point: the splice threshold chosen on the pooled
    out-of-fold rows of its members (the value holdout_metrics applies to the holdout genes)."""
    _, oof = consolidated_oof(model_dir)
    pooled = oof["consolidated"]
    return {"splice_threshold": oof_splice_threshold(pooled),
            "chosen_on": "out-of-fold predictions of the training genes",
            "criterion": "maximum splice F1 (donor or acceptor vs neither) over the pooled out-of-fold rows",
            "score": "p_donor + p_acceptor: the members' calibrated out-of-fold probabilities averaged with the "
                     "ensemble weights (core/evaluation/holdout.py pool_oof)",
            "rule": SPLICE_RULE, "rows": len(pooled), "genes": int(len(np.unique(pooled.gene_id))),
            "oof_splice_ap": binary_splice_metrics(pooled.y_splice, pooled.p_splice)["ap"]}


def predict_rows(model_dir: str | Path, ds: ParquetDataset, genes: Sequence[str],
                 batch_rows: int = 32_768) -> dict[str, ScoredRows]:
    """Stream the rows of ``genes`` through the one data path and score them with the
    consolidated model and with each of its members (features aligned by name).

    Returns model name → rows: ``consolidated`` (the weighted average of the members' calibrated
    probabilities, exactly ``load_model(model_dir).predict_proba``) and one entry per partition key."""
    model = load_model(model_dir)
    if isinstance(model, EnsembleModel):
        members, weights = model.members, model.weights
        keys = [m["partition_key"] for m in model.manifest["members"]]
    else:
        members, weights, keys = [model], np.ones(1), [model.manifest["partition_key"]]
    features = model.get_feature_names()
    fill: dict[str, float] = {}
    for m in members:
        for f in m.features:
            fill.setdefault(f, 0.0 if is_kmer(f) else float(m.fill[f]))
    col = {f: j for j, f in enumerate(features)}
    index = [np.asarray([col[f] for f in m.features], dtype=np.int64) for m in members]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("gene_id", "position", "label", "base")}
    proba: dict[str, list[np.ndarray]] = {k: [] for k in [*keys, "consolidated"]}
    raw: dict[str, list[np.ndarray]] = {k: [] for k in [*keys, "consolidated"]}
    for b in iter_subset_batches(ds, genes, features, fill, batch_rows):
        for k in ("gene_id", "position", "label", "base"):
            parts[k].append(getattr(b, k))
        ens_p = np.zeros((len(b.label), 3))
        ens_raw = np.zeros((len(b.label), 3))
        for key, m, w, ix in zip(keys, members, weights, index):
            Xm = b.X if len(ix) == b.X.shape[1] and (ix == np.arange(len(ix))).all() else np.ascontiguousarray(b.X[:, ix])
            r = m.raw_proba(Xm)
            p = calibrate_proba(m.calibrators, r)
            proba[key].append(p)
            raw[key].append(r)
            ens_p += w * p
            ens_raw += w * r
        proba["consolidated"].append(ens_p)
        raw["consolidated"].append(ens_raw)
    if not parts["label"]:
        raise DatasetError(f"no rows in {ds.root} for the {len(set(genes))} genes to evaluate")
    gene_id = np.concatenate(parts["gene_id"])
    missing = sorted(set(genes) - set(gene_id.tolist()))
    if missing:
        raise DatasetError(f"{len(missing)} gene(s) to evaluate have no rows in {ds.root}, e.g. {', '.join(missing[:5])}")
    position = np.concatenate(parts["position"])
    label = np.concatenate(parts["label"]).astype(np.int64)
    base = np.concatenate(parts["base"]).astype(np.float64)
    return {k: ScoredRows(gene_id, position, label, base, np.concatenate(proba[k]), np.concatenate(raw[k]))
            for k in proba}


# --------------------------------------------------------------------------- metrics


def base_model_rows(rows: ScoredRows) -> ScoredRows:
    """The base model as a model row: its three scores renormalised to sum to 1 for the 3-class and
    calibration figures, its splice decisions on ``base_splice`` (donor + acceptor as the dataset holds
    them). The dataset's scores need not sum to exactly 1 (atha_chr1: 0.99964–1.00036), and a threshold
    chosen on ``base_splice`` applied to renormalised scores would flip rows next to it: the base row's
    ``splice_f1`` would then differ from ``base_splice_f1_at_oof_threshold`` at the same threshold."""
    proba = rows.base / np.clip(rows.base.sum(axis=1, keepdims=True), 1e-12, None)
    return replace(rows.with_proba(proba), splice=rows.base_splice)



def _has_base(rows: ScoredRows) -> bool:
    return bool(np.isfinite(rows.base).all())


def score_model(name: str, kind: str, rows: ScoredRows, threshold: float | np.ndarray,
                base_threshold: float | np.ndarray | None, scope: str, n_bins: int = 15,
                proba_kind: str = "calibrated") -> dict[str, Any]:
    """One row of the side-by-side table: the metrics of docs/evaluation.md, with the splice decision at
    ``threshold`` (chosen on out-of-fold rows), also at 0.5; the base model at 0.5 and at its
    own out-of-fold threshold; calibration per class (calibrated and raw)."""
    has_base = _has_base(rows)
    thr = np.asarray(threshold, dtype=np.float64)
    m = evaluate(rows.label, rows.proba, rows.gene_idx, rows.base if has_base else None,
                 threshold=thr, base_threshold=0.5, splice_score=rows.splice)
    m["splice_threshold"] = float(np.median(thr))
    out: dict[str, Any] = {"model": name, "kind": kind, "scope": scope, **m}
    at05 = binary_splice_metrics(rows.y_splice, rows.p_splice, 0.5)
    out.update({"splice_f1_at_0.5": at05["f1"], "splice_fp_at_0.5": at05["fp"], "splice_fn_at_0.5": at05["fn"]})
    out["errors"] = out["splice_fp"] + out["splice_fn"]
    if has_base:
        out["base_errors_at_0.5"] = out["base_splice_fp"] + out["base_splice_fn"]
        out["errors_vs_base"] = out["errors"] / out["base_errors_at_0.5"] if out["base_errors_at_0.5"] else None
        # calibrated probabilities at 0.5 are the error-minimising decision (F1-optimal thresholds are not)
        out["errors_at_0.5_vs_base"] = ((at05["fp"] + at05["fn"]) / out["base_errors_at_0.5"]
                                        if out["base_errors_at_0.5"] else None)
        if base_threshold is not None:
            bt = np.asarray(base_threshold, dtype=np.float64)
            b = binary_splice_metrics(rows.y_splice, rows.base_splice, bt)
            out.update({"base_splice_threshold_oof": float(np.median(bt)), "base_splice_f1_at_oof_threshold": b["f1"],
                        "base_errors_at_oof_threshold": b["fp"] + b["fn"]})
    kinds = {proba_kind: rows.proba} if rows.raw is None else {proba_kind: rows.proba, "raw": rows.raw}
    calib, bins = calibration_report(rows.label, kinds, n_bins)
    for c in calib:
        tag = "" if c["kind"] == proba_kind else f"{c['kind']}_"
        for k in ("ece_uniform", "ece_quantile", "brier", "log_loss"):
            out[f"{tag}{k}_{c['class']}"] = c[k]
    out["_calibration"] = calib
    out["_bins"] = bins
    return out


# --------------------------------------------------------------------------- rows selected without labels


def declared_rows_figures(rows: ScoredRows, threshold: float | np.ndarray, base_threshold: float | np.ndarray | None,
                          min_score: float) -> dict[str, Any]:
    """Splice figures on the rows whose selection does not depend on the labels: those whose
    max(donor, acceptor) base score reaches ``min_score``, every one of which the dataset declares
    it holds. Below it a dataset holds positions because they are annotated sites (or sampled near
    them, or at random), so there a low base score is itself a hint of a site, which data selected
    without labels does not repeat. The thresholds are the headline's (chosen out-of-fold), so the
    figures differ only in the rows counted; ``sites_below_declared`` are the sites left out."""
    keep = np.maximum(rows.base[:, 1], rows.base[:, 2]) >= min_score
    y = rows.y_splice

    def on_kept(t: float | np.ndarray) -> float | np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return t[keep] if t.ndim else t

    m = binary_splice_metrics(y[keep], rows.p_splice[keep], on_kept(threshold))
    out: dict[str, Any] = {
        "declared_min_score": min_score, "declared_rows": int(keep.sum()), "declared_sites": int(y[keep].sum()),
        "sites_below_declared": int(y[~keep].sum()), "declared_splice_f1": m["f1"], "declared_splice_ap": m["ap"],
        "declared_splice_fp": m["fp"], "declared_splice_fn": m["fn"]}
    if base_threshold is not None:
        out["declared_base_splice_f1"] = binary_splice_metrics(y[keep], rows.base_splice[keep],
                                                               on_kept(base_threshold))["f1"]
    return out


def declared_rows_note(min_score: float | None, figures: dict[str, Any] | None = None) -> str:
    """What the declared-rows figures are, in words (with their counts when given)."""
    if min_score is None:
        return ("no declared-rows figures: the dataset does not declare "
                "row_selection.every_position_with_max_score_at_least")
    text = (f"declared rows: max(donor_score, acceptor_score) ≥ {min_score:g}, every one of which the dataset holds "
            "whatever the labels (below, rows are there because of the annotation: sites, near-site and random "
            "negatives)")
    if figures:
        total = figures["declared_sites"] + figures["sites_below_declared"]
        text += (f"; {figures['declared_rows']:,} rows, {figures['declared_sites']:,} sites; "
                 f"{figures['sites_below_declared']:,} of {total:,} sites ({figures['sites_below_declared'] / max(total, 1):.1%}) "
                 "score below and are not counted")
    return text


@dataclass
class Evaluation:
    scope: str                              # HOLDOUT | OUT_OF_FOLD
    scope_note: str
    genes: int
    rows: int
    table: list[dict[str, Any]]             # one row per model: base, each instance, consolidated
    calibration: list[dict[str, Any]]       # per model × class × kind
    bins: list[dict[str, Any]]              # reliability bins per model × class × kind × strategy
    scored: dict[str, ScoredRows]           # the evaluated rows per model (base scores included)
    thresholds: dict[str, float]            # model → splice threshold (chosen on out-of-fold rows)
    holdout: str = ""                       # what the plan held out (chromosomes or genes), in words
    declared_rows_note: str = ""            # what the declared_* columns count, in words


def evaluate_models(model_dir: str | Path, ds: ParquetDataset | None, holdout_genes: Sequence[str],
                    settings: EvaluationSettings = EvaluationSettings(), holdout: str = "",
                    declared_min_score: float | None = None) -> Evaluation:
    """Base model, every member and the consolidated model on genes they never trained on.
    ``holdout``: what the plan held out, in words (``plan.describe_holdout``), named in every row.
    ``declared_min_score``: the dataset's declared ``every_position_with_max_score_at_least``; every
    row then also has the ``declared_*`` figures (``declared_rows_figures``)."""
    members, oof = consolidated_oof(model_dir)
    pooled = oof["consolidated"]
    names = [m["partition_key"] for m in members] + ["consolidated"]
    kinds = {m["partition_key"]: "instance" for m in members} | {"consolidated": "consolidated"}
    if holdout_genes:
        if ds is None:
            raise ValueError("a dataset is needed to evaluate holdout genes")
        trained = {m["partition_key"]: trained_genes(m["dir"]) for m in members}
        leaks = {k: sorted(v & set(holdout_genes)) for k, v in trained.items() if v & set(holdout_genes)}
        if leaks:
            raise DatasetError("holdout genes were trained on, refusing to report them as holdout: "
                               + "; ".join(f"{k}: {', '.join(v[:10])}" for k, v in leaks.items()))
        scored = predict_rows(model_dir, ds, holdout_genes, settings.batch_rows)
        thresholds: dict[str, Any] = {k: oof_splice_threshold(oof[k]) for k in names}
        base_thr: Any = choose_threshold(pooled.y_splice, pooled.base_splice) if _has_base(pooled) else None
        scope = HOLDOUT
        note = (f"holdout: {len(set(holdout_genes))} genes of the plan's global holdout"
                + (f" — {holdout}" if holdout else "") + "; no instance trained on "
                "them. Splice thresholds chosen on out-of-fold predictions of the training genes, then applied "
                "unchanged to the holdout rows.")
    else:
        pooled.group = gene_groups(pooled.gene_id, settings.threshold_groups, settings.seed)
        scored = oof
        thresholds = {k: crossfit_thresholds(oof[k].y_splice, oof[k].p_splice, oof[k].group) for k in names}
        base_thr = (crossfit_thresholds(pooled.y_splice, pooled.base_splice, pooled.group)
                    if _has_base(pooled) else None)
        scope = OUT_OF_FOLD
        note = ("out-of-fold (no holdout genes: train_all_genes): each row predicted by a fold model that never "
                "trained on its gene; the consolidated row pools the members' out-of-fold predictions (averaged "
                "with the ensemble weights where a gene is in two instances) — the consolidated model itself has "
                "no unseen genes. Splice thresholds cross-fitted: each gene group (instance: fold) is thresholded "
                "with the value chosen on the other groups.")
    ref = scored["consolidated"]
    table, calibration, bins = [], [], []
    rows_by_model: dict[str, ScoredRows] = {}
    if _has_base(ref):
        base_rows = base_model_rows(ref)
        rows_by_model["base"] = base_rows
        table.append(score_model("base", "base", base_rows, base_thr, base_thr, scope, settings.ece_bins,
                                 proba_kind="base_scores"))
    # the base model's threshold on each model's rows: out-of-fold, an instance's rows are not the pooled ones
    base_thr_on = {name: base_thr if base_thr is None or np.ndim(base_thr) == 0 or scored[name] is ref
                   else thresholds_by_gene(base_thr, ref, scored[name]) for name in names}
    for name in names:
        rows_by_model[name] = scored[name]
        table.append(score_model(name, kinds[name], scored[name], thresholds[name], base_thr_on[name], scope,
                                 settings.ece_bins))
    declared = declared_min_score is not None and _has_base(ref)
    if declared:
        for r in table:
            name = r["model"]
            thr, base_on = (base_thr, base_thr) if name == "base" else (thresholds[name], base_thr_on[name])
            r.update(declared_rows_figures(rows_by_model[name], thr, base_on, float(declared_min_score)))
    for r in table:
        r["holdout"] = holdout or ("none" if scope == OUT_OF_FOLD else f"{len(set(holdout_genes))} genes")
        calibration += [{"model": r["model"], **c} for c in r.pop("_calibration")]
        bins += [{"model": r["model"], **b} for b in r.pop("_bins")]
    summary_thr = {k: float(np.median(v)) for k, v in thresholds.items()}
    if base_thr is not None:
        summary_thr["base"] = float(np.median(base_thr))
    return Evaluation(scope, note, int(len(np.unique(ref.gene_id))), len(ref), table, calibration, bins,
                      rows_by_model, summary_thr, table[0]["holdout"],
                      declared_rows_note(declared_min_score if declared else None, table[-1] if declared else None))


def table_to_arrow(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows of dicts (possibly with different keys) → one Arrow table (missing values null)."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows])
