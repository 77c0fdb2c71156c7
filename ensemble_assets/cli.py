"""Command line: ``ensemble-assets demo-data | train | predict | models | backfill``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ensemble_assets.core.artifacts import model_store, planned_config
from ensemble_assets.core.config import DEMO_GENES_PER_INSTANCE, PlatformConfig, default_data_root
from ensemble_assets.core.model.versions import store_actor
from ensemble_assets.core.planning.plan import describe_holdout
from ensemble_assets.core.training.loop import PROGRESS_LOGGER
from ensemble_assets.core.training.settings import (
    DEFAULT_INSTANCE_KIND,
    INSTANCE_KINDS,
    TrainingSettings,
    require_device,
)


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
                   holdout_chromosomes=tuple(args.holdout_chromosomes or ()), seed=args.seed)
    training = replace(base.training, n_folds=args.n_folds, n_estimators=args.n_estimators,
                       device=args.device, calibration=args.calibration, nthread=args.threads, seed=args.seed)
    training = replace(training, instance_kind=args.instance_kind, max_sample_rows=args.max_sample_rows,
                       estimator_params=_json_object(args.estimator_params, "--estimator-params"))
    screening = replace(base.screening, exclude=tuple(args.exclude or ()), seed=args.seed,
                        kmer_sizes=tuple(args.kmer_sizes) if args.kmer_sizes is not None else None,  # []: none
                        gene_context=args.gene_context)
    return replace(base, dataset=dataset, plan=plan, training=training, screening=screening)


@contextmanager
def _printing_progress():
    """Print the instance's progress lines (``PROGRESS_LOGGER``: rows loaded, each fold and class with
    its best iteration and validation log loss, the final model), indented, while training."""
    logger = logging.getLogger(PROGRESS_LOGGER)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("    %(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


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
    from ensemble_assets.defs.models.assets import model_promotion
    from ensemble_assets.defs.planning.assets import training_plan
    from ensemble_assets.defs.training.assets import instance_model
    from ensemble_assets.defs.training.retraining import partitions_to_train
    from ensemble_assets.runs import materialize

    cfg = build_config(args).validate()  # bad settings: refused before anything is read or written
    require_device(cfg.training)         # --device cuda where XGBoost sees no GPU: refused too
    instance = _instance(cfg)
    print(f"dataset: {cfg.dataset_path}   data root: {cfg.root}")
    ok, errors = materialize(cfg, instance, [gene_inventory, feature_screening, training_plan])
    if not ok:
        print("training plan failed:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    plan = artifacts.load_plan(cfg)
    keys = [s["key"] for s in plan["subsets"]]
    todo = partitions_to_train(instance, keys, force=args.force_retrain_all, cfg=cfg)
    print(f"plan: {plan['strategy']}, {len(keys)} instance(s) of ≤{plan['genes_per_instance']} genes; "
          f"held out: {describe_holdout(plan)}")
    if not todo:
        print(f"nothing to retrain: all {len(keys)} instance_model partitions are materialized "
              "with unchanged genes, features, settings and code")
    failed = []
    for i, key in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] training instance_model partition {key} ...", flush=True)
        with _printing_progress():
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
    ok, errors = materialize(cfg, instance, [model_promotion])
    if not ok:
        print("model promotion failed (the consolidated model is stored as a candidate version):\n  "
              + "\n  ".join(errors), file=sys.stderr)
        return 1
    store = model_store(cfg)
    last = next((e for e in reversed(store.history()) if e["action"] in ("promote", "refuse")), None)
    print(f"current model version: {store.current_id()}"
          + (f" (last decision on {last['version']}: {last['action']}: {last['reason']})" if last else ""))
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
    print(f"\n{ev['scope']} evaluation, base vs meta — held out: {ev.get('holdout', 'genes')} ({ev['genes']} genes, "
          f"{ev['rows']} rows never trained on by the evaluated model; thresholds chosen out-of-fold):")
    print(reports.format_table(ev["headline"], columns=reports.HEADLINE_COLUMNS))
    declared = reports.declared_rows_line(ev)
    if declared:
        print(declared)
    print(f"reports: {reports.report_paths(cfg)['dir']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Score ``--input`` with ``--model`` on the streaming path of the scored_positions asset
    (core/scoring/): whole-gene batches, only the columns the model reads, bounded memory."""
    from ensemble_assets.core.scoring.model_ref import resolve_scoring_model
    from ensemble_assets.core.scoring.score import Progress, every, score_dataset

    cfg = _data_root_config(args)
    sm = resolve_scoring_model(args.model, store=model_store(cfg), threshold=args.threshold)
    print(f"model {sm.path} (version {sm.version}, {sm.model.total_instances} instance(s)); splice threshold "
          f"{sm.threshold:.4f}: {sm.threshold_source}", file=sys.stderr)

    def report(p: Progress) -> None:
        print(f"  {p.line()}", file=sys.stderr, flush=True)

    r = score_dataset(sm.model, sm.threshold, args.input, args.output, sm.version,
                      batch_rows=args.batch_rows or cfg.scoring.batch_rows, memory_limit=cfg.scoring.memory_limit,
                      progress=None if args.quiet else every(args.progress_seconds, report))
    if r.gene_context is not None and r.gene_context.warning:
        print(f"warning: {r.gene_context.warning}", file=sys.stderr)
    base = (f"; base model at 0.5: {', '.join(f'{k} {v:,}' for k, v in r.base_calls.items())}"
            if r.base_calls else "")
    print(f"scored {r.rows:,} rows of {r.genes:,} genes in {r.seconds:.1f} s ({r.rows_per_s:,.0f} rows/s) → "
          f"{r.output}: {', '.join(f'{k} {v:,}' for k, v in r.calls.items())}{base}")
    return 0


def _data_root_config(args: argparse.Namespace) -> PlatformConfig:
    """The settings in force at ``--data-root`` (else the default data root): the current plan's."""
    root = str(Path(args.data_root).resolve()) if args.data_root else str(default_data_root())
    return planned_config(PlatformConfig(data_root=root))


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def cmd_models(args: argparse.Namespace) -> int:
    """``models list | history | promote VERSION | rollback``: the versions under <artifacts>/models."""
    store = model_store(_data_root_config(args))
    if args.models_command == "list":
        rows = store.versions()
        if not rows:
            print(f"no model versions in {store.root}: train (or materialize consolidated_model) first")
            return 0
        print(f"model versions in {store.root} (metrics: latest promotion comparison, on genes neither model "
              "trained on; AP out-of-fold until compared):")
        print(f"  {'id':<18}{'created':<27}{'status':<11}{'threshold':>10}{'spliceF1':>9}{'spliceAP':>9}"
              f"{'maxECE':>8}{'oofAP':>8}")
        for r in rows:
            m = r["metrics"]
            print(f"  {r['id']:<18}{r['created'][:26]:<27}{r['status']:<11}{_fmt(m.get('splice_threshold')):>10}"
                  f"{_fmt(m.get('splice_f1')):>9}{_fmt(m.get('splice_ap')):>9}{_fmt(m.get('max_ece')):>8}"
                  f"{_fmt(m.get('oof_splice_ap')):>8}")
        return 0
    if args.models_command == "history":
        for e in store.history():
            print(f"{e['at'][:19]}  {e['action']:<9}{e.get('version') or '-':<18}by {e['actor']}: {e['reason']}")
        return 0
    actor = args.actor or store_actor()
    if args.models_command == "promote":
        vid = store.resolve(args.version).name
        store.promote(vid, args.reason, actor, gate="manual promotion (gate not applied)")
        print(f"current model: {vid} (promoted by {actor}: {args.reason})")
        return 0
    vid = store.rollback(actor, args.reason)
    print(f"current model: {vid} (rolled back by {actor}: {args.reason})")
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
    t.add_argument("--holdout-chromosomes", nargs="+", metavar="CHR",
                   help="hold out every gene of these chromosomes (names as in the data's 'chrom' column) "
                        "instead of a random --holdout-fraction of the genes")
    t.add_argument("--force-retrain-all", action="store_true")
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--calibration", default="isotonic", choices=["isotonic", "platt", "none"])
    t.add_argument("--threads", type=int, default=0, help="XGBoost threads (0: all cores)")
    t.add_argument("--exclude", nargs="*", help="feature columns (or computed features) to exclude; an unknown name "
                                                "is an error")
    t.add_argument("--gene-context", action=argparse.BooleanOptionalAction, default=None,
                   help="features of the gene's other candidate donors / acceptors (positions scoring >= 0.02): "
                        "nearest, second-nearest, nearest strong, the highest score nearby (docs/features.md); "
                        "honest only for a dataset holding every position scoring >= 0.02. Default: on "
                        "when the dataset's dataset.json declares that (row_selection), else off; the reason is "
                        "in feature_screening's metadata")
    t.add_argument("--kmer-sizes", nargs="*", type=int,
                   help="k-mer sizes to keep as features, e.g. 3 5; the flag alone keeps no k-mer (default: the "
                        "sizes up to 3; larger ones added nothing measurable on atha_chr1, docs/results.md). A size "
                        "the dataset has no columns of is an error")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--skip-shap", action="store_true", help="do not materialize instance_shap / ensemble_shap")
    t.add_argument("--instance-kind", default=DEFAULT_INSTANCE_KIND, choices=INSTANCE_KINDS,
                   help="model of each instance (part of the partition key: changing it retrains)")
    t.add_argument("--estimator-params", default=None,
                   help="scikit-learn kinds: estimator parameters as a JSON object, e.g. '{\"max_iter\": 200}'")
    t.add_argument("--max-sample-rows", type=int, default=TrainingSettings.max_sample_rows,
                   help="scikit-learn kinds: row cap of the gene-aware training sample (whole genes, seeded)")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser(
        "predict", help="score a file, directory or dataset with a model version or a model directory",
        description="Score every row of --input with --model and write one Parquet table: gene_id, position "
                    "(and chrom, strand, absolute_position where present), p_neither/p_donor/p_acceptor, "
                    "splice_call (p_donor + p_acceptor >= the splice threshold) and predicted_type, the base "
                    "scores and the base call at 0.5 where present, model_version. Rows stream in whole-gene "
                    "batches reading only the columns the model needs, so memory does not grow with the input; "
                    "the output appears only when complete. Same code as the scored_positions asset.")
    r.add_argument("--model", default="current",
                   help="a model version id (or a unique prefix), 'current' (default), 'previous', or a model "
                        "directory (a consolidated model or an instance)")
    r.add_argument("--data-root", help="where the model versions are (default: $ENSEMBLE_ASSETS_DATA, else ./data)")
    r.add_argument("--input", required=True,
                   help="a Parquet file, a directory of Parquet files, or a dataset (<dataset>/master/*.parquet); "
                        "needs gene_id, position and the columns the model reads; splice_type is optional")
    r.add_argument("--output", required=True, help="the Parquet file to write (replaced atomically)")
    r.add_argument("--threshold", type=float, default=None,
                   help="splice threshold in (0, 1] (default: the model's stored operating point; required for "
                        "an instance directory, which stores none)")
    r.add_argument("--batch-rows", type=int, default=None,
                   help="rows per batch (default: scoring.batch_rows of the configuration, 32768); a batch holds "
                        "whole genes, so it can be larger by up to one gene")
    r.add_argument("--progress-seconds", type=float, default=10.0,
                   help="seconds between progress lines (rows, rows/s, ETA) on stderr (default 10)")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.set_defaults(func=cmd_predict)

    m = sub.add_parser("models", help="list, promote or roll back model versions (<data root>/artifacts/models)")
    msub = m.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="every version: id, created, status, key metrics")
    mh = msub.add_parser("history", help="every promotion, rollback, refusal and removal: who, why, when")
    mp = msub.add_parser("promote", help="make VERSION current by hand (the promotion gate is not applied)")
    mp.add_argument("version", help="a version id (or a unique prefix), or 'previous'")
    mr = msub.add_parser("rollback", help="make the previous version current again")
    for sp in (ml, mh, mp, mr):
        sp.add_argument("--data-root", help="default: $ENSEMBLE_ASSETS_DATA, else ./data")
    for sp in (mp, mr):
        sp.add_argument("--reason", required=True, help="why (recorded in the history)")
        sp.add_argument("--actor", help="who (recorded in the history; default: $USER, else 'cli')")
    m.set_defaults(func=cmd_models)

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
