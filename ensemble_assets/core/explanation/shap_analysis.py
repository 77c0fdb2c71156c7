"""Feature importances (SHAP) of every instance, of any kind, and of the consolidated ensemble:
the orchestration.

For each instance, a seeded sample of its out-of-fold rows is read back through the one data
path (``sampling``) and each of its three class outputs is explained (``explainers``: exact
TreeSHAP for tree models, bounded permutation SHAP for the others). Additivity is verified on
every explained row (sum of contributions + bias = the margin); above the tolerance the analysis
fails instead of reporting numbers. The method of every instance is recorded in its summary, in
the per-instance tables and in the ensemble's instance table. Per-instance results are cached on
disk and reused while the boosters, out-of-fold rows, dataset and settings are unchanged; the
ensemble aggregate, its tables and summary come from ``aggregation``, the plots from ``plots``.

No Dagster here: the assets in ``defs/explanation/assets.py`` and the benchmark call these functions.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ensemble_assets.core.data.contract import ParquetDataset, open_dataset
from ensemble_assets.core.data.schema import CLASSES
from ensemble_assets.core.explanation.aggregation import (
    LEGACY_CSV,
    aggregate,
    ensemble_table,
    feature_type_table,
    instance_table,
    rank_agreement,
    summarize,
    write_legacy_csv,
)
from ensemble_assets.core.explanation.explainers import check_additivity, explain_outputs, explainer_of, method_text
from ensemble_assets.core.explanation.plots import write_shap_plots
from ensemble_assets.core.explanation.results import InstanceShap
from ensemble_assets.core.explanation.sampling import ShapSample, load_samples, request_from_oof
from ensemble_assets.core.explanation.settings import SAMPLE_SCOPE, SCALES, SHAP_FORMAT_VERSION, ShapSettings
from ensemble_assets.core.io import atomic_directory, read_json, write_json, write_parquet
from ensemble_assets.core.model.ensemble import EnsembleModel, load_model

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


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


def compute_ensemble_shap(model_dir: str | Path, out_dir: str | Path, settings: ShapSettings = ShapSettings(),
                          cache_dir: str | Path | None = None, dataset: str | Path | None = None,
                          recompute: bool = False, plots: bool = True, log: Log = _quiet) -> dict[str, Any]:
    """SHAP of the consolidated model in ``model_dir``: every member instance × 3 class outputs,
    aggregated with the model's own weights; tables, summary JSON, legacy CSV and plots written
    atomically to ``out_dir``. Per-instance results are kept in ``cache_dir`` (default
    ``<out_dir>/../instance_shap``) and reused when unchanged. Returns the summary."""
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
