"""Command line: ``ensemble-assets demo-data | train | predict | backfill``."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from ensemble_assets.core.config import DEMO_GENES_PER_INSTANCE, PlatformConfig, default_data_root
from ensemble_assets.core.training.settings import DEFAULT_INSTANCE_KIND, INSTANCE_KINDS, TrainingSettings


def _instance(cfg: PlatformConfig):
    """The persistent Dagster instance: ``$DAGSTER_HOME`` when set (``make`` sets it to the
    repository, whose dagster.yaml keeps storage under ./data/dagster), else ``<data root>/dagster``,
    created with telemetry off on first use. Materializations there are the training checkpoints."""
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        home = cfg.root / "dagster"
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "dagster.yaml").is_file():
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def build_config(args: argparse.Namespace) -> PlatformConfig:
    base = PlatformConfig(data_root=str(Path(args.data_root).resolve()) if args.data_root else str(default_data_root()))
    dataset = str(Path(args.dataset).expanduser().resolve()) if args.dataset else ""
    # a dataset: None = as many genes as fit one instance's memory budget (PlanSettings); the demo
    # keeps small instances so that it shows several partitions
    gpi = args.genes_per_instance or (DEMO_GENES_PER_INSTANCE if not dataset else None)
    plan = replace(base.plan, genes_per_instance=gpi, instance_overlap=args.instance_overlap,
                   max_instances=args.max_instances, sample_genes=args.sample_genes,
                   train_all_genes=args.train_all_genes, holdout_fraction=args.holdout_fraction,
                   seed=args.seed)
    training = replace(base.training, n_folds=args.n_folds, n_estimators=args.n_estimators,
                       device=args.device, calibration=args.calibration, nthread=args.threads, seed=args.seed)
    training = replace(training, instance_kind=args.instance_kind, max_sample_rows=args.max_sample_rows,
                       estimator_params=_json_object(args.estimator_params, "--estimator-params"))
    screening = replace(base.screening, exclude=tuple(args.exclude or ()), seed=args.seed,
                        kmer_sizes=tuple(args.kmer_sizes) if args.kmer_sizes else None,
                        gene_context=args.gene_context)
    return replace(base, dataset=dataset, plan=plan, training=training, screening=screening)


def _json_object(text: str | None, flag: str) -> dict:
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{flag}: expected a JSON object such as '{{\"max_iter\": 200}}', got {text!r}")
    return value


def cmd_demo_data(args: argparse.Namespace) -> int:
    from ensemble_assets.datasets.demo import DemoSpec, write_demo_dataset

    out = Path(args.output).resolve() if args.output else PlatformConfig().demo_dir
    spec = DemoSpec(n_genes=args.genes, seed=args.seed,
                    kmer_sizes=tuple(int(k) for k in args.kmer_sizes.split(",")))
    summary = write_demo_dataset(out, spec)
    print(f"wrote {summary['rows']} rows of {summary['genes']} genes in {summary['files']} files to {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ensemble_assets.core import artifacts
    from ensemble_assets.defs.dataset.assets import feature_screening, gene_inventory
    from ensemble_assets.defs.ensemble.assets import consolidated_model
    from ensemble_assets.defs.planning.assets import training_plan
    from ensemble_assets.defs.training.assets import instance_model
    from ensemble_assets.defs.training.retraining import partitions_to_train
    from ensemble_assets.runs import materialize

    cfg = build_config(args).validate()  # bad settings: refused before anything is read or written
    instance = _instance(cfg)
    cfg.save()
    print(f"dataset: {cfg.dataset_path}   data root: {cfg.root}")
    ok, errors = materialize(cfg, instance, [gene_inventory, feature_screening, training_plan])
    if not ok:
        print("training plan failed:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    plan = artifacts.load_plan(cfg)
    keys = [s["key"] for s in plan["subsets"]]
    todo = partitions_to_train(instance, keys, force=args.force_retrain_all, cfg=cfg)
    print(f"plan: {plan['strategy']}, {len(keys)} instance(s) of ≤{plan['genes_per_instance']} genes, "
          f"{len(plan['holdout_genes'])} holdout genes")
    if not todo:
        print(f"nothing to retrain: all {len(keys)} instance_model partitions are materialized "
              "with unchanged genes, features, settings and code")
    failed = []
    for i, key in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] training instance_model partition {key} ...", flush=True)
        ok, errors = materialize(cfg, instance, [instance_model], partition_key=key)
        if not ok:
            failed.append(key)
            print(f"  FAILED: {'; '.join(errors)}", file=sys.stderr)
    print("\nout-of-fold metrics per instance (rows of genes each fold model did not train on):")
    print(f"  {'partition':<14}{'genes':>7}{'rows':>9}{'macroF1':>9}{'spliceF1':>9}{'baseF1':>8}{'spliceAP':>9}")
    for key in keys:
        m = artifacts.instance_manifest(cfg, key)
        if m is None:
            print(f"  {key:<14} (not trained)")
            continue
        o = m["metrics"]["oof"]
        print(f"  {key:<14}{m['n_genes']:>7}{m['n_rows']:>9}{o['macro_f1']:>9.4f}{o['splice_f1']:>9.4f}"
              f"{(o.get('base_splice_f1') or float('nan')):>8.4f}{(o['splice_ap'] or float('nan')):>9.4f}")
    if failed:
        print(f"{len(failed)} partition(s) failed: {', '.join(failed)}; the consolidated model was not built. "
              "Fix the cause and run train again (only the failed partitions are retrained).", file=sys.stderr)
        return 1
    ok, errors = materialize(cfg, instance, [consolidated_model])
    if not ok:
        print("consolidation failed:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    if not args.skip_shap:  # SHAP of every instance, then of the ensemble (reused while unchanged)
        from ensemble_assets.core.io import read_json
        from ensemble_assets.core.stages import shap_paths
        from ensemble_assets.defs.explanation.assets import ensemble_shap, instance_shap

        runs = [materialize(cfg, instance, [instance_shap], partition_key=key) for key in keys]
        runs += [materialize(cfg, instance, [ensemble_shap])] if all(ok for ok, _ in runs) else []
        if not all(ok for ok, _ in runs):
            errors = [e for _, errs in runs for e in errs]
            print("SHAP analysis failed (the model is fine):\n  " + "\n  ".join(errors), file=sys.stderr)
            return 1
        top = read_json(shap_paths(cfg)["ensemble"] / "shap_analysis_summary.json")["top_features"]
        for c in ("donor", "acceptor"):
            print(f"top {c} features (SHAP): {', '.join(t['feature'] for t in top[c][:5])}")
    print(f"\ntrained {len(todo)} instance(s); consolidated model: {artifacts.paths(cfg)['consolidated']}")
    return _evaluate(cfg, instance)


def _evaluate(cfg: PlatformConfig, instance) -> int:
    """Materialize the evaluation assets after consolidated_model and print the side-by-side table."""
    from ensemble_assets.core.evaluation import reports
    from ensemble_assets.defs.evaluation.assets import evaluation_assets
    from ensemble_assets.runs import materialize

    ok, errors = materialize(cfg, instance, evaluation_assets)
    if not ok:
        print("evaluation failed:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    ev = reports.load_holdout_metrics(cfg)
    print(f"\n{ev['scope']} evaluation, base vs meta ({ev['genes']} genes, {ev['rows']} rows never trained on by "
          f"the evaluated model; thresholds chosen out-of-fold):")
    print(reports.format_table(ev["headline"], columns=reports.HEADLINE_COLUMNS))
    print(f"reports: {reports.report_paths(cfg)['dir']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ensemble_assets.core.io import write_parquet
    from ensemble_assets.core.model.ensemble import load_model

    model = load_model(args.model)
    table = pq.read_table(args.input)
    proba = model.predict_proba(table)
    out = {c: table.column(c) for c in ("gene_id", "position") if c in table.schema.names}
    for j, c in enumerate(model.classes_):
        out[f"p_{c}"] = pa.array(proba[:, j])
    out["predicted_type"] = pa.array(model.classes_[proba.argmax(axis=1)].tolist())
    write_parquet(args.output, pa.table(out))
    counts = dict(zip(*np.unique(proba.argmax(axis=1), return_counts=True)))
    print(f"predicted {table.num_rows} rows with {model.total_instances} instance(s) → {args.output} "
          f"({', '.join(f'{model.classes_[k]}: {v}' for k, v in counts.items())})")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from ensemble_assets.backfill import (
        ASSET,
        DagsterAPIError,
        launch_backfill,
        partition_statuses,
        select_partitions,
        wait_for_backfill,
    )

    if not (args.failed or args.missing):
        print("error: say which partitions to backfill: --failed and/or --missing", file=sys.stderr)
        return 2
    try:
        statuses = partition_statuses(args.url)
        todo = select_partitions(statuses, args.failed, args.missing)
        kinds = " and ".join(k for k, on in (("failed", args.failed), ("missing", args.missing)) if on)
        print(f"{ASSET} at {args.url}: {len(statuses['materialized'])} materialized, {len(statuses['failed'])} failed, "
              f"{len(statuses['missing'])} missing, {len(statuses['in_progress'])} in progress")
        if not todo:
            print(f"nothing to backfill: no {kinds} partitions")
            return 0
        backfill_id = launch_backfill(args.url, todo, title=f"ensemble-assets backfill --{' --'.join(kinds.split(' and '))}")
        print(f"backfill {backfill_id}: {len(todo)} {kinds} partition(s) of {ASSET}: {', '.join(todo)}")
        print(f"follow it at {args.url.rstrip('/')}/runs/b/{backfill_id}")
        if args.wait:
            status = wait_for_backfill(args.url, backfill_id, timeout=args.timeout)
            print(f"backfill {backfill_id}: {status}")
            return 0 if status in ("COMPLETED", "COMPLETED_SUCCESS") else 1
    except DagsterAPIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ensemble-assets", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo-data", help="write the synthetic demo dataset")
    d.add_argument("--output", help="dataset directory (default: <data root>/demo)")
    d.add_argument("--genes", type=int, default=240)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--kmer-sizes", default="3,5")
    d.set_defaults(func=cmd_demo_data)

    t = sub.add_parser("train", help="materialize the whole asset graph in-process (persistent instance)")
    t.add_argument("--dataset", help="Parquet directory (MetaSpliceAI <dataset>/master layout accepted); "
                                     "default: the demo dataset, generated if absent")
    t.add_argument("--data-root", help="artifacts root (default: $ENSEMBLE_ASSETS_DATA, else ./data)")
    t.add_argument("--genes-per-instance", type=int, default=None,
                   help="default: as many as fit one instance's memory budget (one instance where the "
                        f"training genes fit); {DEMO_GENES_PER_INSTANCE} for the demo dataset")
    t.add_argument("--instance-overlap", type=float, default=0.1)
    t.add_argument("--max-instances", type=int, default=10)
    t.add_argument("--n-folds", type=int, default=5)
    t.add_argument("--n-estimators", type=int, default=400, help="maximum boosting rounds (early stopping)")
    t.add_argument("--sample-genes", type=int, default=None, help="train on this many whole genes (seeded)")
    t.add_argument("--train-all-genes", action="store_true", help="no holdout genes")
    t.add_argument("--holdout-fraction", type=float, default=0.1)
    t.add_argument("--force-retrain-all", action="store_true")
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--calibration", default="isotonic", choices=["isotonic", "platt", "none"])
    t.add_argument("--threads", type=int, default=0, help="XGBoost threads (0: all cores)")
    t.add_argument("--exclude", nargs="*", help="feature columns to exclude")
    t.add_argument("--gene-context", action="store_true",
                   help="add the distances to the gene's nearest other candidate donor / acceptor (score >= 0.1) "
                        "as features; only for a dataset holding every position scoring >= 0.1, as "
                        "MetaSpliceAI datasets do (every position >= 0.02)")
    t.add_argument("--kmer-sizes", nargs="*", type=int,
                   help="k-mer sizes to keep as features, e.g. 3 5 (default: the sizes up to 3; larger ones "
                        "added nothing measurable on atha_chr1, docs/results.md)")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--skip-shap", action="store_true", help="do not materialize instance_shap / ensemble_shap")
    t.add_argument("--instance-kind", default=DEFAULT_INSTANCE_KIND, choices=INSTANCE_KINDS,
                   help="model of each instance (part of the partition key: changing it retrains)")
    t.add_argument("--estimator-params", default=None,
                   help="scikit-learn kinds: estimator parameters as a JSON object, e.g. '{\"max_iter\": 200}'")
    t.add_argument("--max-sample-rows", type=int, default=TrainingSettings.max_sample_rows,
                   help="scikit-learn kinds: row cap of the gene-aware training sample (whole genes, seeded)")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("predict", help="predict with a model directory")
    r.add_argument("--model", required=True)
    r.add_argument("--input", required=True)
    r.add_argument("--output", required=True)
    r.set_defaults(func=cmd_predict)

    from ensemble_assets.backfill import default_url

    b = sub.add_parser("backfill", help="launch a backfill of failed/missing instance_model partitions on the "
                                        "running Dagster instance (GraphQL API of dagster dev / the webserver)")
    b.add_argument("--failed", action="store_true", help="partitions whose latest run failed")
    b.add_argument("--missing", action="store_true", help="partitions never materialized (and not running)")
    b.add_argument("--url", default=default_url(), help="webserver URL (default: $ENSEMBLE_ASSETS_DAGSTER_URL "
                                                        "or http://127.0.0.1:3000)")
    b.add_argument("--wait", action="store_true", help="wait until the backfill's runs are done; exit 1 if any failed")
    b.add_argument("--timeout", type=float, default=3600, help="seconds to --wait")
    b.set_defaults(func=cmd_backfill)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # bad input: the message names what is at fault
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
