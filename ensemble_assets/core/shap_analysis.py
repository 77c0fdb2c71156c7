"""Feature importances (SHAP) of every instance, of any kind, and of the consolidated ensemble.

For each instance, a seeded sample of its out-of-fold rows is read back through the one data
path (``dataset.iter_subset_batches``) and each of its three class outputs is explained:

- tree models get **exact TreeSHAP** (tree-path-dependent, no background sample):
  ``xgboost_ovr`` and ``xgboost_softprob`` through XGBoost's own
  ``Booster.predict(DMatrix, pred_contribs=True)`` in row chunks; scikit-learn's
  HistGradientBoosting through shap's tree algorithm on the exported trees (node counts as cover);
- other models (``sklearn:MLPClassifier``) get a **bounded model-agnostic permutation SHAP**
  (interventional): for each of ``agnostic_rows`` sampled rows, ``agnostic_permutations``
  random feature orders and their reverses; walking an order, the row's values replace those of
  ``agnostic_background`` background rows (drawn from the same sample) one feature at a time and
  each feature gets the change of the mean model output. Cost: rows × 2 × permutations ×
  (features + 1) × background model evaluations, independent of the model.

The explained output is the model's margin: the log-odds of each one-vs-rest booster
(``xgboost_ovr``) or the per-class input of the softmax (multi-class kinds). Additivity is
verified on every explained row (sum of contributions + bias = the margin); above the tolerance
the analysis fails instead of reporting numbers. The method of every instance is recorded in its
summary, in the per-instance tables and in the ensemble's instance table.

The ensemble aggregate weights each instance by the consolidated model's own normalised weight
(no extra 1/N): per class ``I_c(f) = Σ_i w_i · mean|SHAP|_{i,c}(f)``, the ensemble importance is
the mean of the three classes. Features are matched by name; a feature an instance does not
have contributes 0 for that instance. In a mixed ensemble the members' scales differ (log-odds
vs softmax margin), which the recorded methods say.

No Dagster here: the assets in ``assets/shap.py`` and the benchmark call these functions.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .dataset import DatasetError, ParquetDataset, iter_subset_batches, open_dataset
from .io import atomic_directory, read_json, sha256_text, write_json, write_parquet
from .schema import CLASSES, KMER_PATTERN, feature_family, is_kmer

Log = Callable[[str], None]

SHAP_FORMAT_VERSION = 2
METHODS = {
    "treeshap_xgboost": "exact TreeSHAP (XGBoost Booster.predict(pred_contribs=True), tree-path-dependent)",
    "treeshap_trees": "exact TreeSHAP (shap's tree-path-dependent algorithm on the exported trees, node counts "
                      "as cover)",
    "permutation": "model-agnostic permutation SHAP (interventional), bounded: {rows} sampled rows, "
                   "{permutations} random feature order(s) and reverse(s) per row, {background} background rows "
                   "from the same sample",
}
SCALES = {"ovr": "log-odds (the margin of each one-vs-rest booster)",
          "softmax": "softmax margin (each class's input to the softmax of the multi-class model)"}
SAMPLE_SCOPE = ("a seeded sample of each instance's out-of-fold rows (its own genes, each predicted "
                "out-of-fold during CV); the explained boosters are the instance's final ones, fitted on "
                "all of its genes. Importances describe what the models use, not how well they predict.")
AGGREGATION = ("per class: sum over instances of w_i * mean|SHAP|_(i,class), w = the consolidated model's "
               "instance weights normalised to sum to 1 (no extra 1/N); ensemble importance: the mean of "
               "the three classes; features matched by name, a feature absent from an instance counts 0 for it")
LEGACY_CSV = "shap_importance_incremental.csv"
LEGACY_COLUMNS = ("feature", "importance_neither", "importance_donor", "importance_acceptor",
                  "importance_mean", "shap_importance")


def _quiet(_: str) -> None:
    pass


class AdditivityError(RuntimeError):
    """SHAP contributions plus bias do not reproduce the booster's margin within tolerance."""


@dataclass(frozen=True)
class ShapSettings:
    sample_rows: int = 2000            # out-of-fold rows explained per instance
    seed: int = 42
    chunk_rows: int = 500              # rows per pred_contribs call (bounds memory)
    max_additivity_error: float = 1e-3
    top_n: int = 20                    # features shown in tables and plots
    beeswarm_features: int = 20        # features per class kept for the beeswarm plots
    nthread: int = 0                   # 0 → all cores
    batch_rows: int = 8192             # rows per streamed batch when reading the sample
    # the model-agnostic explainer (non-tree kinds), bounded: rows × 2 × permutations × (F + 1) × background
    agnostic_rows: int = 100           # rows of the sample explained
    agnostic_background: int = 10      # background rows (from the same sample)
    agnostic_permutations: int = 1     # random feature orders per row (each with its reverse)

    def signature(self) -> str:
        """Hash of everything that changes the per-instance numbers (not threads or chunking)."""
        return sha256_text(repr((SHAP_FORMAT_VERSION, self.sample_rows, self.seed, self.beeswarm_features,
                                 self.agnostic_rows, self.agnostic_background,
                                 self.agnostic_permutations)))[:12]

    @property
    def threads(self) -> int:
        return self.nthread or os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# sampling and reading the sampled rows
# ---------------------------------------------------------------------------------------------

def sample_oof_rows(n_rows: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded uniform sample (without replacement) of ``n`` of ``n_rows`` rows."""
    if n >= n_rows:
        return np.arange(n_rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=n, replace=False)).astype(np.int64)


def occurrence_in_group(*keys: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows (in order) have the same key values."""
    n = len(keys[0]) if keys else 0
    if not n:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(n), *reversed(keys)))
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for k in keys:
        sk = np.asarray(k)[order]
        new[1:] |= sk[1:] != sk[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    occ = np.empty(n, dtype=np.int64)
    occ[order] = np.arange(n) - start
    return occ


def _pair_key(gene_idx: np.ndarray, position: np.ndarray) -> np.ndarray:
    """(gene, position) packed in one int64 (gene index in the high 32 bits)."""
    pos = np.asarray(position, dtype=np.int64)
    if len(pos) and (pos.min() < -(2**31) or pos.max() >= 2**32):
        raise DatasetError(f"position values outside [-2^31, 2^32) cannot identify rows (e.g. {pos.max()})")
    return (np.asarray(gene_idx, dtype=np.int64) << 32) | (pos & 0xFFFFFFFF)


@dataclass
class SampleRequest:
    """Rows wanted for one instance, identified by (gene, position, k-th row with both): the
    positions of a gene are unique in MetaSpliceAI datasets, so k is 0 and a row's identity does
    not depend on the order rows are streamed in (which differs between gene sets: DuckDB does
    not keep the files' order when it filters). Without a position column, k is the row's rank
    within its gene, and the label check below is the only guard against a changed order."""

    key: str
    features: list[str]
    fill: dict[str, float]
    gene_id: np.ndarray        # (n,) object
    position: np.ndarray       # (n,) int64, as recorded in oof_predictions (-1: none)
    duplicate: np.ndarray      # (n,) int64: k-th row of the instance with this gene and position
    label: np.ndarray          # (n,) int8, as recorded in oof_predictions
    oof_row: np.ndarray        # (n,) int64 row index in oof_predictions.parquet


@dataclass
class ShapSample:
    key: str
    features: list[str]
    X: np.ndarray              # (n, F) float32 in the instance's feature order, imputed as in training
    label: np.ndarray
    gene_id: np.ndarray
    position: np.ndarray
    oof_row: np.ndarray


def request_from_oof(key: str, oof: pa.Table, features: Sequence[str], fill: Mapping[str, float],
                     n: int, seed: int) -> SampleRequest:
    """The seeded sample of an instance's out-of-fold rows (``oof_predictions.parquet``)."""
    genes = np.asarray(oof.column("gene_id").to_pylist(), dtype=object)
    _, gidx = np.unique(genes, return_inverse=True)
    pos = np.asarray(oof.column("position").to_numpy(), dtype=np.int64)
    dup = occurrence_in_group(gidx, pos)
    rows = sample_oof_rows(len(genes), n, seed)
    lab = np.asarray(oof.column("label").to_numpy(), dtype=np.int8)
    return SampleRequest(key, list(features), {f: float(fill[f]) for f in features}, genes[rows], pos[rows],
                         dup[rows], lab[rows], rows)


def load_samples(ds: ParquetDataset, requests: Sequence[SampleRequest], batch_rows: int = 8192,
                 log: Log = _quiet) -> list[ShapSample]:
    """Read the rows of several instances' samples in ONE pass over the data path.

    The union of the requested genes is streamed once with the union of the features (nulls
    kept as NaN); each request takes its rows, identified by (gene, position, k), and its own
    columns by name, imputed with its own fill values. A sampled row that is missing, or whose
    label differs from the one recorded at training time, means the dataset changed: error."""
    if not requests:
        return []
    genes = np.asarray(sorted(set().union(*[set(r.gene_id.tolist()) for r in requests])), dtype=object)
    union: list[str] = []
    seen: set[str] = set()
    for r in requests:
        for f in r.features:
            if f not in seen:
                seen.add(f)
                union.append(f)
    col_of = {f: j for j, f in enumerate(union)}
    nan_fill = {f: float("nan") for f in union}
    wanted: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for ri, r in enumerate(requests):
        pk = _pair_key(np.searchsorted(genes, r.gene_id), r.position)
        for slot, (a, k) in enumerate(zip(pk.tolist(), r.duplicate.tolist())):
            wanted.setdefault((a, k), []).append((ri, slot))
    wanted_pk = np.unique(np.asarray([a for a, _ in wanted], dtype=np.int64))
    cols = [np.asarray([col_of[f] for f in r.features], dtype=np.int64) for r in requests]
    X = [np.full((len(r.gene_id), len(r.features)), np.nan, dtype=np.float32) for r in requests]
    found = [np.zeros(len(r.gene_id), dtype=bool) for r in requests]
    label = [np.full(len(r.gene_id), -1, dtype=np.int8) for r in requests]
    seen_pk: dict[int, int] = {}
    n_read = 0
    for b in iter_subset_batches(ds, genes.tolist(), union, nan_fill, batch_rows):
        n_read += len(b.label)
        pk = _pair_key(np.searchsorted(genes, b.gene_id), b.position)
        take: list[tuple[list[int], list[int]]] = [([], []) for _ in requests]
        for i in np.flatnonzero(np.isin(pk, wanted_pk)).tolist():
            a = int(pk[i])
            k = seen_pk.get(a, 0)
            seen_pk[a] = k + 1
            for ri, slot in wanted.get((a, k), ()):
                take[ri][0].append(i)
                take[ri][1].append(slot)
        for ri, (rows, slots) in enumerate(take):
            if rows:
                X[ri][slots] = b.X[np.ix_(rows, cols[ri])]
                found[ri][slots] = True
                label[ri][slots] = b.label[rows]
    out = []
    for ri, r in enumerate(requests):
        if not found[ri].all():
            miss = np.flatnonzero(~found[ri])[:3]
            raise DatasetError(
                f"{ds.root}: {int((~found[ri]).sum())} sampled row(s) of instance {r.key} are no longer in the "
                f"dataset (e.g. {', '.join(f'gene {r.gene_id[i]} position {r.position[i]}' for i in miss)}): "
                "the dataset changed since the instance was trained; retrain it")
        bad = np.flatnonzero(label[ri] != r.label)
        if len(bad):
            i = bad[0]
            raise DatasetError(
                f"{ds.root}: {len(bad)} sampled row(s) of instance {r.key} have another label than when it was "
                f"trained (gene {r.gene_id[i]} position {r.position[i]}: label {label[ri][i]} now, {r.label[i]} "
                "then): the dataset changed since the instance was trained; retrain it")
        Xr = X[ri]
        nan = np.isnan(Xr)
        if nan.any():
            fillv = np.asarray([r.fill[f] for f in r.features], dtype=np.float32)
            Xr[nan] = np.broadcast_to(fillv, Xr.shape)[nan]
        out.append(ShapSample(r.key, r.features, Xr, label[ri], r.gene_id, r.position, r.oof_row))
    log(f"read {sum(len(r.gene_id) for r in requests)} sampled rows of {len(requests)} instance(s) in one pass "
        f"over {n_read} rows of {len(genes)} genes")
    return out


# ---------------------------------------------------------------------------------------------
# the explainers: exact TreeSHAP of tree models, bounded permutation SHAP of the others
# ---------------------------------------------------------------------------------------------

def tree_contributions(booster: Any, X: np.ndarray, features: Sequence[str] | None = None,
                       chunk_rows: int = 500, nthread: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """XGBoost's exact TreeSHAP contributions and the margins of the same rows, in chunks of
    ``chunk_rows`` rows: (n × (F + 1), n) for a one-output booster (last column the bias), and
    (n × G × (F + 1), n × G) for a booster of G outputs (``multi:softprob``)."""
    import xgboost as xgb

    names = list(features) if features is not None else None
    if names is not None and booster.feature_names is not None and list(booster.feature_names) != names:
        raise ValueError("the booster's feature names differ from the sample's columns")
    booster.set_param({"nthread": int(nthread)})
    n, F = X.shape
    parts, margins = [], []
    for s in range(0, max(n, 1), max(1, chunk_rows)):
        e = min(n, s + max(1, chunk_rows))
        dm = xgb.DMatrix(X[s:e], feature_names=names if booster.feature_names is not None else None,
                         nthread=int(nthread))
        parts.append(np.asarray(booster.predict(dm, pred_contribs=True), dtype=np.float32))
        margins.append(np.asarray(booster.predict(dm, output_margin=True), dtype=np.float64))
    return np.concatenate(parts), np.concatenate(margins)


def permutation_contributions(margin: Callable[[np.ndarray], np.ndarray], X: np.ndarray, background: np.ndarray,
                              permutations: int, rng: np.random.Generator,
                              max_cells: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Model-agnostic (interventional) permutation SHAP of every output of ``margin`` (n × G).

    For each row and each of ``permutations`` random feature orders, and the reverse of each:
    starting from the background rows, the row's values replace theirs one feature at a time in
    that order; a feature's contribution is the change of the background-mean output. The
    contributions of one order sum to ``margin(x) − mean margin(background)`` exactly
    (telescoping). Returns contributions (n × G × (F + 1), last column the bias
    ``mean margin(background)``) and the margins of the rows (n × G)."""
    n, F = X.shape
    B = len(background)
    if not B:
        raise ValueError("permutation SHAP needs at least one background row")
    bg = np.asarray(background, dtype=X.dtype)
    bias = np.asarray(margin(bg), dtype=np.float64).mean(axis=0)
    G = len(bias)
    contribs = np.zeros((n, G, F + 1), dtype=np.float64)
    contribs[:, :, F] = bias
    out = np.empty((n, G), dtype=np.float64)
    step = max(1, max_cells // max(1, B * F))            # hybrids per model call
    for i in range(n):
        x = X[i]
        for _ in range(max(1, permutations)):
            order = rng.permutation(F)
            for walk in (order, order[::-1]):
                rank = np.empty(F, dtype=np.int64)
                rank[walk] = np.arange(F)
                values = np.empty((F + 1, G), dtype=np.float64)   # values[k]: first k features of walk from x
                for k0 in range(0, F + 1, step):
                    ks = np.arange(k0, min(F + 1, k0 + step))
                    from_x = rank[None, :] < ks[:, None]            # (len(ks), F)
                    H = np.where(from_x[:, None, :], x[None, None, :], bg[None, :, :])
                    values[ks] = np.asarray(margin(H.reshape(-1, F)), dtype=np.float64).reshape(
                        len(ks), B, G).mean(axis=1)
                contribs[i][:, walk] += (values[1:] - values[:-1]).T
                out[i] = values[F]
        contribs[i, :, :F] /= 2 * max(1, permutations)
    return contribs, out


@dataclass
class OutputExplanation:
    """The contributions of one class output on the explained rows of the sample."""
    contribs: np.ndarray       # (m, F + 1), last column the bias
    margin: np.ndarray         # (m,)
    seconds: float


def explainer_of(model: Any) -> tuple[str, str]:
    """(method id, scale id) for an instance model of any kind."""
    from .sklearn_export import TreeEnsemblePredictor

    if model.model_type in ("xgboost_ovr", "xgboost_softprob"):
        return "treeshap_xgboost", "ovr" if model.model_type == "xgboost_ovr" else "softmax"
    if isinstance(model.predictor, TreeEnsemblePredictor):
        return "treeshap_trees", "softmax"
    if not hasattr(model.predictor, "margin"):
        raise ValueError(f"instance of kind {model.model_type}: its predictor exposes no margin to explain")
    return "permutation", "softmax"


def method_text(method: str, settings: ShapSettings, rows: int) -> str:
    return METHODS[method].format(rows=rows, permutations=settings.agnostic_permutations,
                                  background=settings.agnostic_background)


def explain_outputs(model: Any, sample: ShapSample, settings: ShapSettings,
                    method: str) -> tuple[np.ndarray, list[OutputExplanation]]:
    """The rows explained (indices into the sample) and one explanation per class."""
    X, F = sample.X, len(sample.features)
    n = len(X)
    rows = np.arange(n, dtype=np.int64)
    if method == "treeshap_xgboost" and model.model_type == "xgboost_ovr":
        out = []
        for c in range(3):
            t = time.perf_counter()
            contribs, margin = tree_contributions(model.boosters[c], X, sample.features, settings.chunk_rows,
                                                  settings.threads)
            out.append(OutputExplanation(contribs, margin, time.perf_counter() - t))
        return rows, out
    t = time.perf_counter()
    if method == "treeshap_xgboost":          # one multi:softprob booster: all three outputs at once
        contribs, margin = tree_contributions(model.boosters[0], X, sample.features, settings.chunk_rows,
                                              settings.threads)
        contribs = contribs.reshape(n, 3, F + 1)
        margin = margin.reshape(n, 3)
    elif method == "treeshap_trees":
        import shap

        X64 = X.astype(np.float64)
        margin = model.predictor.margin(X64)
        contribs = np.empty((n, 3, F + 1), dtype=np.float64)
        for c in range(3):
            ex = shap.TreeExplainer(model.predictor.shap_trees(c), feature_perturbation="tree_path_dependent")
            contribs[:, c, :F] = ex.shap_values(X64, check_additivity=False) if n else 0.0
            contribs[:, c, F] = float(np.ravel(ex.expected_value)[0])
    else:
        rng = np.random.default_rng(settings.seed)
        rows = np.sort(rng.choice(n, size=min(n, settings.agnostic_rows), replace=False)).astype(np.int64)
        bg = X[rng.choice(n, size=min(n, settings.agnostic_background), replace=False)]
        contribs, margin = permutation_contributions(model.predictor.margin, X[rows], bg,
                                                     settings.agnostic_permutations, rng)
    seconds = (time.perf_counter() - t) / 3
    return rows, [OutputExplanation(contribs[:, c, :], margin[:, c], seconds) for c in range(3)]


def additivity_error(contribs: np.ndarray, margin: np.ndarray) -> float:
    """Largest |Σ contributions + bias − margin| over the rows (contributions include the bias column)."""
    if not len(margin):
        return 0.0
    return float(np.max(np.abs(contribs.sum(axis=1, dtype=np.float64) - margin)))


def check_additivity(contribs: np.ndarray, margin: np.ndarray, tolerance: float, what: str) -> float:
    err = additivity_error(contribs, margin)
    if not err <= tolerance:
        raise AdditivityError(f"{what}: SHAP contributions + bias differ from the margin by up to {err:.3g} "
                              f"(tolerance {tolerance:g}); the importances would not explain this model")
    return err


# ---------------------------------------------------------------------------------------------
# one instance
# ---------------------------------------------------------------------------------------------

@dataclass
class InstanceShap:
    key: str
    features: list[str]
    mean_abs: np.ndarray                       # (3, F) mean |SHAP| per class
    mean: np.ndarray                           # (3, F) signed mean SHAP per class
    bias: list[float]                          # per class (the expected margin)
    additivity_error: list[float]              # per class, max over rows
    beeswarm: pa.Table                         # class, feature, row, shap, value (top features per class)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.summary["method_id"]

    def importance_table(self) -> pa.Table:
        F = len(self.features)
        cols: dict[str, Any] = {"feature": pa.array(self.features, pa.string()),
                                "family": pa.array([feature_family(f) for f in self.features], pa.string())}
        for c, cname in enumerate(CLASSES):
            cols[f"mean_abs_shap_{cname}"] = self.mean_abs[c]
        for c, cname in enumerate(CLASSES):
            cols[f"mean_shap_{cname}"] = self.mean[c]
        cols["method"] = pa.array([self.method] * F, pa.string())
        cols["scale"] = pa.array([self.summary["scale"]] * F, pa.string())
        return pa.table(cols)


def _model_digests(manifest: dict[str, Any]) -> dict[str, str]:
    files = manifest.get("model_files") or list((manifest.get("boosters") or {}).values())
    return {f: manifest["files"][f] for f in sorted(files)}


def _fingerprint(manifest: dict[str, Any], dataset: Path, settings: ShapSettings) -> dict[str, Any]:
    return {"model_files_sha256": _model_digests(manifest),
            "oof_sha256": manifest["files"].get("oof_predictions.parquet"),
            "settings_signature": settings.signature(), "dataset": str(dataset),
            "format_version": SHAP_FORMAT_VERSION}


def explain_sample(model: Any, sample: ShapSample, settings: ShapSettings, log: Log = _quiet) -> InstanceShap:
    """SHAP of the three class outputs of one instance (any kind) on its sample; checks additivity."""
    F = len(sample.features)
    method, scale = explainer_of(model)
    rows, outputs = explain_outputs(model, sample, settings, method)
    n = len(rows)
    Xr = sample.X[rows]
    mean_abs = np.zeros((3, F))
    mean = np.zeros((3, F))
    bias, errors, seconds = [], [], {}
    bees = {"class": [], "feature": [], "row": [], "shap": [], "value": []}
    size = model.manifest.get("n_estimators", {})
    for c, cname in enumerate(CLASSES):
        o = outputs[c]
        errors.append(check_additivity(o.contribs, o.margin, settings.max_additivity_error,
                                       f"instance {sample.key} ({model.model_type}), {cname} output"))
        seconds[cname] = round(o.seconds, 3)
        phi = o.contribs[:, :F]
        mean_abs[c] = np.abs(phi).mean(axis=0, dtype=np.float64) if n else 0.0
        mean[c] = phi.mean(axis=0, dtype=np.float64) if n else 0.0
        bias.append(float(o.contribs[0, F]) if n else 0.0)
        top = [j for j in np.argsort(-mean_abs[c], kind="stable")[:settings.beeswarm_features] if mean_abs[c, j] > 0]
        for j in top:
            bees["class"] += [cname] * n
            bees["feature"] += [sample.features[j]] * n
            bees["row"].append(rows.astype(np.int32))
            bees["shap"].append(phi[:, j].astype(np.float32))
            bees["value"].append(Xr[:, j])
        log(f"instance {sample.key} ({model.model_type}): {cname} output, {n} rows explained by {method} in "
            f"{seconds[cname]:.2f}s (additivity error {errors[-1]:.2e})")
    beeswarm = pa.table({
        "class": pa.array(bees["class"], pa.string()), "feature": pa.array(bees["feature"], pa.string()),
        "row": np.concatenate(bees["row"]) if bees["row"] else np.zeros(0, np.int32),
        "shap": np.concatenate(bees["shap"]) if bees["shap"] else np.zeros(0, np.float32),
        "value": np.concatenate(bees["value"]) if bees["value"] else np.zeros(0, np.float32),
    })
    counts = np.bincount(sample.label[rows].astype(np.int64), minlength=3)
    summary = {
        "partition_key": sample.key, "model_type": model.model_type, "rows": n,
        "sample_rows": int(len(sample.label)), "genes": int(len(set(sample.gene_id[rows].tolist()))),
        "sample_class_counts": {cname: int(counts[c]) for c, cname in enumerate(CLASSES)},
        "model_size": {str(k): int(v) for k, v in size.items()},
        "n_features": F, "bias": dict(zip(CLASSES, bias)),
        "additivity_error": dict(zip(CLASSES, errors)), "additivity_tolerance": settings.max_additivity_error,
        "max_additivity_error": max(errors) if errors else 0.0, "shap_seconds": seconds,
        "method_id": method, "method": method_text(method, settings, n), "scale": SCALES[scale],
        "tree_model": method != "permutation", "sample_scope": SAMPLE_SCOPE, "settings": asdict(settings),
    }
    return InstanceShap(sample.key, list(sample.features), mean_abs, mean, bias, errors, beeswarm, summary)


def write_instance_shap(out_dir: str | Path, result: InstanceShap) -> Path:
    with atomic_directory(out_dir) as tmp:
        write_parquet(tmp / "importance.parquet", result.importance_table())
        write_parquet(tmp / "beeswarm.parquet", result.beeswarm)
        write_json(tmp / "summary.json", result.summary)
    return Path(out_dir)


def read_instance_shap(out_dir: str | Path) -> InstanceShap:
    out_dir = Path(out_dir)
    s = read_json(out_dir / "summary.json")
    t = pq.read_table(out_dir / "importance.parquet")
    return InstanceShap(
        key=s["partition_key"], features=t.column("feature").to_pylist(),
        mean_abs=np.vstack([t.column(f"mean_abs_shap_{c}").to_numpy() for c in CLASSES]),
        mean=np.vstack([t.column(f"mean_shap_{c}").to_numpy() for c in CLASSES]),
        bias=[s["bias"][c] for c in CLASSES], additivity_error=[s["additivity_error"][c] for c in CLASSES],
        beeswarm=pq.read_table(out_dir / "beeswarm.parquet"), summary=s)


def _is_current(out_dir: Path, fingerprint: dict[str, Any]) -> bool:
    f = out_dir / "summary.json"
    if not f.is_file() or not (out_dir / "importance.parquet").is_file():
        return False
    try:
        s = read_json(f)
    except ValueError:
        return False
    return all(s.get(k) == v for k, v in fingerprint.items())


def explain_instances(ds: ParquetDataset, models: Mapping[str, Any], settings: ShapSettings,
                      cache_dir: str | Path, recompute: bool = False,
                      log: Log = _quiet) -> tuple[dict[str, InstanceShap], list[str]]:
    """Per-instance SHAP for every model of ``models`` (partition key → loaded InstanceModel).

    A result in ``cache_dir/<key>`` computed for the same boosters, out-of-fold rows, dataset and
    settings is reused; the others are computed (their samples read in one pass) and written
    there. Returns the results and the keys that were computed now."""
    cache_dir = Path(cache_dir)
    results: dict[str, InstanceShap] = {}
    todo, prints = [], {}
    for key, m in models.items():
        fp = _fingerprint(m.manifest, ds.root, settings)
        prints[key] = fp
        out = cache_dir / key
        if not recompute and _is_current(out, fp):
            results[key] = read_instance_shap(out)
            log(f"instance {key}: SHAP importances unchanged since the last run, reused")
        else:
            todo.append(key)
    if todo:
        t = time.perf_counter()
        reqs = [request_from_oof(k, pq.read_table(models[k].path / "oof_predictions.parquet",
                                                  columns=["gene_id", "position", "label"]),
                                 models[k].features, models[k].fill, settings.sample_rows, settings.seed)
                for k in todo]
        samples = load_samples(ds, reqs, settings.batch_rows, log)
        load_s = time.perf_counter() - t
        for k, sample in zip(todo, samples):
            r = explain_sample(models[k], sample, settings, log)
            r.summary.update(prints[k])
            r.summary["sample_load_seconds"] = round(load_s, 3)
            r.summary["sample_load_instances"] = len(todo)
            write_instance_shap(cache_dir / k, r)
            results[k] = r
    return {k: results[k] for k in models}, todo


# ---------------------------------------------------------------------------------------------
# the ensemble aggregate
# ---------------------------------------------------------------------------------------------

def feature_group(name: str) -> str:
    """``{k}-mer`` for k-mer counts (any k), else the DESIGN §4 family (base_score, context, …)."""
    m = KMER_PATTERN.match(name)
    return f"{m.group(1)}-mer" if m else feature_family(name)


@dataclass
class EnsembleShap:
    keys: list[str]
    weights: np.ndarray            # (I,) normalised
    features: list[str]            # union, sorted by name
    per_instance: np.ndarray       # (I, 3, U) mean |SHAP|, 0 where the instance lacks the feature
    present: np.ndarray            # (I, U) bool
    per_class: np.ndarray          # (3, U) weighted
    ensemble: np.ndarray           # (U,) mean of the classes
    methods: list[str] = field(default_factory=list)   # (I,) the explainer of each instance


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
    import csv

    from .io import atomic_path

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


def compute_ensemble_shap(model_dir: str | Path, out_dir: str | Path, settings: ShapSettings = ShapSettings(),
                          cache_dir: str | Path | None = None, dataset: str | Path | None = None,
                          recompute: bool = False, plots: bool = True, log: Log = _quiet) -> dict[str, Any]:
    """SHAP of the consolidated model in ``model_dir``: every member instance × 3 class outputs,
    aggregated with the model's own weights; tables, summary JSON, legacy CSV and plots written
    atomically to ``out_dir``. Per-instance results are kept in ``cache_dir`` (default
    ``<out_dir>/../instance_shap``) and reused when unchanged. Returns the summary."""
    from .model import EnsembleModel, load_model

    t0 = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model = load_model(model_dir)
    if not isinstance(model, EnsembleModel):
        raise ValueError(f"{model_dir} is an instance model; ensemble SHAP needs a consolidated model directory")
    members = model.manifest["members"]
    ds_path = dataset or model.manifest.get("dataset")
    if not ds_path:
        raise ValueError(f"{model_dir / 'manifest.json'} names no dataset; pass dataset=")
    ds = open_dataset(ds_path)
    keys = [m["partition_key"] for m in members]
    cache = Path(cache_dir) if cache_dir is not None else out_dir.parent / "instance_shap"
    results, computed = explain_instances(ds, dict(zip(keys, model.members)), settings, cache, recompute, log)
    t_instances = time.perf_counter() - t0
    agg = aggregate(results, {m["partition_key"]: m["weight"] for m in members})
    agreement = rank_agreement(agg, settings.top_n)
    types = feature_type_table(agg)
    summary = summarize(agg, results, agreement, types, settings, members)
    summary["model_dir"] = str(model_dir)
    summary["dataset"] = str(ds.root)
    summary["instances_computed"] = computed
    summary["instances_reused"] = [k for k in keys if k not in computed]
    with atomic_directory(out_dir) as tmp:
        write_parquet(tmp / "ensemble_importance.parquet", ensemble_table(agg))
        write_parquet(tmp / "instance_importance.parquet", instance_table(agg))
        write_parquet(tmp / "feature_type_importance.parquet", types)
        write_parquet(tmp / "instance_agreement.parquet", agreement)
        write_legacy_csv(tmp / LEGACY_CSV, agg)
        t_plots = time.perf_counter()
        files = {}
        if plots:
            from .shap_plots import write_shap_plots

            files = write_shap_plots(tmp / "plots", agg, results[summary["best_instance"]], types, agreement,
                                     summary["scale"], settings.top_n)
        summary["plots"] = {k: f"plots/{Path(v).name}" for k, v in files.items()}
        summary["timings"] = {"instances_seconds": round(t_instances, 3),
                              "plots_seconds": round(time.perf_counter() - t_plots, 3) if plots else 0.0,
                              "total_seconds": round(time.perf_counter() - t0, 3)}
        write_json(tmp / "shap_analysis_summary.json", summary)
    log(f"ensemble SHAP: {len(keys)} instance(s) × 3 outputs ({len(computed)} computed now) in "
        f"{summary['timings']['total_seconds']:.1f}s; top features: "
        f"{', '.join(t['feature'] for t in summary['top_features']['ensemble'][:5])}")
    return summary


# ---------------------------------------------------------------------------------------------
# the pipeline steps on a PlatformConfig (what the assets call)
# ---------------------------------------------------------------------------------------------

def shap_paths(cfg: Any) -> dict[str, Path]:
    return {"instances": cfg.artifacts / "instance_shap", "ensemble": cfg.artifacts / "ensemble_shap"}


def run_instance_shap(cfg: Any, key: str, settings: ShapSettings, recompute: bool = False,
                      log: Log = _quiet) -> InstanceShap:
    """SHAP of one trained instance (``instance_model`` partition ``key``) of the current plan."""
    from .model import load_model
    from .pipeline import load_plan

    plan = load_plan(cfg)
    model = load_model(cfg.instance_dir(key))
    ds = open_dataset(plan["dataset"])
    results, _ = explain_instances(ds, {key: model}, settings, shap_paths(cfg)["instances"], recompute, log)
    return results[key]


def run_ensemble_shap(cfg: Any, settings: ShapSettings, recompute: bool = False, log: Log = _quiet) -> dict[str, Any]:
    from .pipeline import paths

    p = shap_paths(cfg)
    if not (paths(cfg)["consolidated"] / "manifest.json").is_file():
        raise FileNotFoundError(f"no consolidated model at {paths(cfg)['consolidated']}: materialize "
                                "consolidated_model first")
    return compute_ensemble_shap(paths(cfg)["consolidated"], p["ensemble"], settings, cache_dir=p["instances"],
                                 recompute=recompute, log=log)
