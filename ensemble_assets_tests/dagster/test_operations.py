"""Layer 2: operating the platform — schedule, sensors, automation, retries, concurrency, lineage —
evaluated against a Dagster test instance."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ensemble_assets.core import artifacts
from ensemble_assets.core.planning.capacity import machine_cores, threads_for, training_capacity
from ensemble_assets.definitions import defs
from ensemble_assets.defs.automation import ALL_PARTITIONS_MATERIALIZED, ensemble_automation_sensor
from ensemble_assets.defs.concurrency import INSTANCE_TRAINING_POOL, instance_threads, pool_limit
from ensemble_assets.defs.dataset.assets import feature_screening, gene_inventory
from ensemble_assets.defs.ensemble.assets import consolidated_model
from ensemble_assets.defs.executors import DASK_CONFIG, DASK_SCHEDULER_ENV, default_execution, ensemble_executor
from ensemble_assets.defs.partitions import gene_subsets
from ensemble_assets.defs.planning.assets import training_plan
from ensemble_assets.defs.resources import EnsembleResource
from ensemble_assets.defs.scoring.assets import scored_positions
from ensemble_assets.defs.training.assets import instance_model
from ensemble_assets.defs.training.schedules import weekly_retraining
from ensemble_assets.defs.training.sensors import describe_run_failure, partition_failure_sensor, plan_partitions_sensor
from ensemble_assets.runs import materialize
from ensemble_assets_tests.conftest import REPO, make_config
from ensemble_assets_tests.faults import gene_in_one_subset, write_infinite_rows

PLAN = [gene_inventory, feature_screening, training_plan]
GIB = 2**30


def mark_materialized(instance: dg.DagsterInstance, key: str, code_version: str = "1") -> None:
    """A materialization of one instance_model partition by the given code version (no training)."""
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=instance_model.key, partition=key, tags={"dagster/code_version": code_version}))


def corrupt_feature(cfg) -> str:
    features, _ = artifacts.load_features(cfg)
    return next(f for f in features if f in ("donor_score", "acceptor_score")) if (
        {"donor_score", "acceptor_score"} & set(features)) else features[0]


@pytest.fixture
def planned(tiny_dataset, tmp_path):
    """A materialized plan of 3 partitions on a copy of the tiny dataset (tests corrupt it; nothing
    trained)."""
    dataset = Path(shutil.copytree(tiny_dataset, tmp_path / "dataset"))
    cfg = make_config(tmp_path / "root", dataset, genes_per_instance=20)
    with dg.instance_for_test() as instance:
        ok, err = materialize(cfg, instance, PLAN)
        assert ok, err
        keys = list(instance.get_dynamic_partitions(gene_subsets.name))
        assert len(keys) == 3
        yield cfg, instance, keys


# -- schedule ----------------------------------------------------------------------------------------

def tick(cfg, instance, when: dt.datetime, resource: EnsembleResource | None = None):
    # entered, so that the context's resources (and the instance they hold) are released after
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when,
                                   repository_def=defs.get_repository_def(),
                                   resources={"ensemble": resource or EnsembleResource.for_config(cfg)}) as ctx:
        return weekly_retraining.evaluate_tick(ctx)


def test_schedule_tick_requests_only_missing_or_stale_partitions(planned):
    cfg, instance, (current, stale, missing) = planned
    mark_materialized(instance, current)                    # trained by the current code: keep
    mark_materialized(instance, stale, code_version="0")    # trained by an older instance_model
    result = tick(cfg, instance, dt.datetime(2026, 1, 5, 3, tzinfo=dt.timezone.utc))
    requested = {r.partition_key: r.tags["ensemble_assets/reason"] for r in result.run_requests}
    assert requested == {stale: "stale code version", missing: "missing"}
    job = defs.resolve_job_def("retraining_job")
    for r in result.run_requests:
        assert r.asset_selection == [instance_model.key]
        dg.validate_run_config(job, r.run_config)
    # once everything is current, the tick trains nothing
    mark_materialized(instance, stale)
    mark_materialized(instance, missing)
    assert tick(cfg, instance, dt.datetime(2026, 1, 12, 3, tzinfo=dt.timezone.utc)).run_requests == []


def test_schedule_waits_for_a_first_plan_and_for_a_plan_being_made(tiny_dataset, tmp_path, planned):
    # an instance that never planned: nothing to retrain (not the default dataset's plan)
    cfg = make_config(tmp_path / "fresh_root", tiny_dataset)
    with dg.instance_for_test() as fresh:
        result = tick(cfg, fresh, dt.datetime(2026, 1, 5, 3, tzinfo=dt.timezone.utc))
        assert result.run_requests == [] and "no training_plan materialized" in result.skip_message
    assert not (tmp_path / "fresh_root").exists()
    # a plan run in progress (a user's plan_job): the tick does not start a second plan or training
    cfg, instance, keys = planned
    instance.add_run(dg.DagsterRun(job_name="plan_job", run_id="a-plan-run", status=dg.DagsterRunStatus.STARTED))
    result = tick(cfg, instance, dt.datetime(2026, 1, 5, 3, tzinfo=dt.timezone.utc))
    assert result.run_requests == [] and "a plan is being made (run a-plan-run)" in result.skip_message
    instance.report_run_canceled(instance.get_run_by_id("a-plan-run"))   # that run is over: the 3 missing partitions
    assert len(tick(cfg, instance, dt.datetime(2026, 1, 12, 3, tzinfo=dt.timezone.utc)).run_requests) == len(keys)


def test_schedule_recomputes_the_plan_when_its_inputs_change(planned):
    cfg, instance, keys = planned
    for k in keys:
        mark_materialized(instance, k)
    assert tick(cfg, instance, dt.datetime(2026, 1, 5, 3, tzinfo=dt.timezone.utc)).run_requests == []
    # new data arrives (a file with genes the plan has not seen) → a new plan, with the current plan's settings
    src = sorted((cfg.dataset_path / "master").glob("*.parquet"))[0]
    table = pq.read_table(src)
    table = table.set_column(table.schema.get_field_index("gene_id"), "gene_id",
                             pa.array(["new-" + g for g in table.column("gene_id").to_pylist()]))
    pq.write_table(table, cfg.dataset_path / "master" / "new_genes.parquet")
    # a schedule tick with the code's default settings re-plans with the plan's own settings
    result = tick(cfg, instance, dt.datetime(2026, 1, 12, 3, tzinfo=dt.timezone.utc),
                  resource=EnsembleResource(data_root=cfg.data_root))
    (request,) = result.run_requests
    assert request.partition_key is None
    assert set(request.asset_selection) == {a.key for a in PLAN}
    dg.validate_run_config(defs.resolve_job_def("retraining_job"), request.run_config)
    settings = request.run_config["resources"]["ensemble"]["config"]
    assert settings["plan"]["genes_per_instance"] == 20 and settings["dataset"] == str(cfg.dataset_path)


def test_schedule_knows_the_dataset_by_content_not_by_path_or_time(planned):
    cfg, instance, keys = planned
    for k in keys:
        mark_materialized(instance, k)
    files = sorted((cfg.dataset_path / "master").glob("*.parquet"))
    for f in files:   # a touch of every file: nothing to do
        os.utime(f, ns=(4_000_000_000_000_000_000, 4_000_000_000_000_000_000))
    assert tick(cfg, instance, dt.datetime(2026, 1, 5, 3, tzinfo=dt.timezone.utc)).run_requests == []
    # moved: the same fingerprint, but the plan is remade where the data now lies (same keys)
    moved = make_config(cfg.root, Path(shutil.move(cfg.dataset_path, cfg.root.parent / "moved")), genes_per_instance=20)
    (request,) = tick(moved, instance, dt.datetime(2026, 1, 12, 3, tzinfo=dt.timezone.utc)).run_requests
    assert request.tags["ensemble_assets/reason"] == "dataset moved" and request.partition_key is None
    ok, err = materialize(moved, instance, PLAN)
    assert ok, err
    assert sorted(instance.get_dynamic_partitions(gene_subsets.name)) == sorted(keys)
    assert tick(moved, instance, dt.datetime(2026, 1, 19, 3, tzinfo=dt.timezone.utc)).run_requests == []
    # new content: a new plan
    first = moved.dataset_path / "master" / files[0].name
    pq.write_table(pq.read_table(first).slice(1), first)
    (request,) = tick(moved, instance, dt.datetime(2026, 1, 26, 3, tzinfo=dt.timezone.utc)).run_requests
    assert request.tags["ensemble_assets/reason"] == "plan inputs changed"


def test_schedule_and_sensors_are_on_by_default():
    assert weekly_retraining.default_status == dg.DefaultScheduleStatus.RUNNING
    assert weekly_retraining.cron_schedule == "0 3 * * 1"
    for sensor in (plan_partitions_sensor, partition_failure_sensor, ensemble_automation_sensor):
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, sensor.name
    repo = defs.get_repository_def()
    assert {s.name for s in repo.sensor_defs} >= {"plan_partitions_sensor", "partition_failure_sensor",
                                                   "ensemble_automation_sensor"}


# -- sensors -----------------------------------------------------------------------------------------

def test_plan_sensor_requests_the_new_plans_untrained_partitions(planned):
    cfg, instance, keys = planned
    mark_materialized(instance, keys[0])
    repo = defs.get_repository_def()
    with dg.partition_loading_context(dynamic_partitions_store=instance):  # as the sensor daemon does
        with dg.build_sensor_context(instance=instance, repository_def=repo) as ctx:
            result = plan_partitions_sensor.evaluate_tick(ctx)
        assert sorted(r.partition_key for r in result.run_requests) == sorted(keys[1:])
        assert all(r.tags["ensemble_assets/reason"] == "missing" for r in result.run_requests)
        job = defs.resolve_job_def("instance_training_job")
        for r in result.run_requests:
            dg.validate_run_config(job, r.run_config)
        # the same plan materialization is not acted on twice
        with dg.build_sensor_context(instance=instance, cursor=result.cursor, repository_def=repo) as ctx:
            again = plan_partitions_sensor.evaluate_tick(ctx)
        assert again.run_requests == []


def test_a_failed_partition_fails_without_retries_and_the_failure_sensor_names_it(planned):
    cfg, instance, keys = planned
    plan = artifacts.load_plan(cfg)
    target = keys[1]
    gene = gene_in_one_subset(plan, target)
    column = corrupt_feature(cfg)
    write_infinite_rows(cfg.dataset_path, gene, column)
    ok, errors = materialize(cfg, instance, [instance_model], partition_key=target)
    assert not ok and "infinite" in errors[0] and column in errors[0]
    run = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": target}))[0]
    retries = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY).records
    assert retries == []          # bad input: Failure(allow_retries=False), no futile retries
    steps = [r.event_log_entry.dagster_event for r in instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records]
    message = describe_run_failure(run, steps)
    assert message.startswith(f"instance_model partition {target} failed")
    assert "infinite" in message and column in message
    # the sensor itself logs that line
    failure = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records[0]
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.ERROR)
    handler.emit = logged.append
    with dg.build_run_status_sensor_context(
            sensor_name="partition_failure_sensor", dagster_instance=instance, dagster_run=run,
            dagster_event=failure.event_log_entry.dagster_event).for_run_failure() as ctx:
        ctx.log.addHandler(handler)
        partition_failure_sensor(ctx)
    assert [r.getMessage() for r in logged] == [message]


# -- automation: consolidation waits for every partition, a failed one counts as missing ---------------

def test_consolidation_materializes_only_when_every_partition_is_materialized_and_none_failed(planned):
    cfg, instance, keys = planned

    def requested(cursor):
        r = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        # scored_positions (scoring_targets partitions, none registered here) has its own tests
        return {e.key.to_user_string() for e in r.results
                if e.key != scored_positions.key and e.true_subset.size}, r.cursor

    got, cursor = requested(None)
    assert got == set()                                   # nothing trained
    for k in keys[:-1]:
        mark_materialized(instance, k)
    got, cursor = requested(cursor)
    assert got == set()                                   # one partition missing
    # the last partition fails for a real reason (never materialized → missing)
    plan = artifacts.load_plan(cfg)
    bad = write_infinite_rows(cfg.dataset_path, gene_in_one_subset(plan, keys[-1]), corrupt_feature(cfg))
    ok, _ = materialize(cfg, instance, [instance_model], partition_key=keys[-1])
    assert not ok
    got, cursor = requested(cursor)
    assert got == set()
    bad.unlink()
    mark_materialized(instance, keys[-1])
    got, cursor = requested(cursor)
    assert got == {"consolidated_model"}                  # every partition materialized: consolidate
    got, cursor = requested(cursor)
    assert got == set()                                   # requested once, not on every tick
    # a partition that had a model fails on its re-run; another partition updates meanwhile:
    # plain eager() would consolidate now (nothing is *missing*), the plan's condition waits
    bad = write_infinite_rows(cfg.dataset_path, gene_in_one_subset(plan, keys[-1]), corrupt_feature(cfg))
    ok, _ = materialize(cfg, instance, [instance_model], partition_key=keys[-1])
    assert not ok
    mark_materialized(instance, keys[0])
    got, cursor = requested(cursor)
    assert got == set()
    bad.unlink()
    mark_materialized(instance, keys[-1])                 # fixed and backfilled
    got, cursor = requested(cursor)
    assert got == {"consolidated_model"}


def test_downstream_assets_without_a_condition_get_the_ensemble_condition():
    assert consolidated_model.automation_conditions_by_key[consolidated_model.key] == ALL_PARTITIONS_MATERIALIZED
    assert ensemble_automation_sensor.default_condition == ALL_PARTITIONS_MATERIALIZED
    repo = defs.get_repository_def()
    target = ensemble_automation_sensor.asset_selection.resolve(repo.asset_graph)
    assert consolidated_model.key in target
    assert not target & {a.key for a in (*PLAN, instance_model)}


# -- retries and concurrency -------------------------------------------------------------------------

def test_instance_training_has_a_retry_policy_and_a_concurrency_pool():
    node = defs.get_repository_def().asset_graph.get(instance_model.key)
    assert instance_model.op.retry_policy.max_retries >= 1
    assert instance_model.op.pools == {INSTANCE_TRAINING_POOL}
    assert node.pools == {INSTANCE_TRAINING_POOL}


def plan_with_peaks(*peaks: int, budget: int) -> dict:
    return {"memory_budget_bytes": budget, "subsets": [{"estimated_peak_bytes": p} for p in peaks]}


@pytest.mark.parametrize("budget, peaks, cores, limit, threads", [
    (16 * GIB, (3 * GIB, 5 * GIB), 8, 3, 2),        # ⌊16 / 5⌋ = 3 fit (the largest instance counts)
    (16 * GIB, (1 * GIB,), 4, 4, 1),                 # 16 fit, but only 4 cores
    (4 * GIB, (6 * GIB,), 8, 1, 8),                  # not even one fits the budget: one at a time
    (64 * GIB, (2 * GIB,) * 3, 2, 2, 1),
])
def test_pool_limit_follows_memory_and_threads_follow_the_limit(budget, peaks, cores, limit, threads):
    cap = training_capacity(plan_with_peaks(*peaks, budget=budget), cores=cores)
    assert (cap.parallel_instances, cap.threads_per_instance) == (limit, threads)
    assert cap.parallel_instances * cap.threads_per_instance <= cores
    assert cap.parallel_instances * max(peaks) <= budget or cap.parallel_instances == 1


def test_threads_respect_a_lower_configured_thread_count():
    assert threads_for(2, configured=0, cores=8) == 4
    assert threads_for(2, configured=1, cores=8) == 1
    assert threads_for(3, configured=8, cores=8) == 2


def test_queued_runs_share_the_cores_and_sequential_cli_runs_use_them_all():
    with dg.instance_for_test() as instance:
        assert pool_limit(instance) == 1                       # no limit set by a plan yet: one at a time
        instance.event_log_storage.set_concurrency_slots(INSTANCE_TRAINING_POOL, 2)
        cores = machine_cores()
        assert instance_threads(instance, configured=0) == (max(1, cores // 2), 2)
        assert instance_threads(instance, configured=0, sequential=True) == (cores, 1)
        assert instance_threads(instance, configured=1, sequential=True) == (1, 1)


def test_materializing_the_plan_sets_the_pool_limit(planned):
    cfg, instance, _ = planned
    plan = artifacts.load_plan(cfg)
    expected = training_capacity(plan).parallel_instances
    assert pool_limit(instance) == expected
    meta = instance.get_latest_materialization_event(training_plan.key).asset_materialization.metadata
    assert meta["parallel_instances"].value == expected
    assert meta["parallel_instances"].value * meta["xgboost_threads_per_instance"].value <= training_capacity(plan).cores


def test_dagster_yaml_configures_queue_pools_retries_monitoring_and_no_telemetry():
    cfg = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert cfg["storage"]["sqlite"]["base_dir"].startswith("data/")
    assert cfg["concurrency"]["pools"]["granularity"] == "run"
    assert cfg["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    assert cfg["run_retries"]["enabled"] and cfg["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert cfg["run_monitoring"]["enabled"]
    assert cfg["telemetry"]["enabled"] is False
    with dg.instance_for_test(overrides={k: v for k, v in cfg.items() if k not in (
            "storage", "local_artifact_storage", "compute_logs")}) as instance:
        assert instance.run_retries_enabled and instance.run_monitoring_enabled
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


# -- executor ------------------------------------------------------------------------------------------

def test_executor_is_in_process_by_default_and_dask_by_configuration(monkeypatch):
    job = defs.resolve_job_def("instance_training_job")
    assert job.executor_def is ensemble_executor
    assert set(dg.validate_run_config(job, {})["execution"]["ensemble_executor"]) == {"in_process"}
    assert set(dg.validate_run_config(job, {"execution": {"config": {"multiprocess": {}}}})["execution"][
        "ensemble_executor"]) == {"multiprocess"}
    dask = {"execution": {"config": {"dask": {"cluster": {"existing": {"address": "tcp://10.0.0.5:8786"}}}}}}
    chosen = dg.validate_run_config(job, dask)["execution"]["ensemble_executor"]
    assert chosen == {"dask": {"cluster": {"existing": {"address": "tcp://10.0.0.5:8786"}}}}
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(job, {"execution": {"config": {"dask": {"cluster": {"nowhere": {}}}}}})
    monkeypatch.setenv(DASK_SCHEDULER_ENV, "tcp://10.0.0.5:8786")   # the code location's default
    assert default_execution() == {"dask": {"cluster": {"existing": {"address": "tcp://10.0.0.5:8786"}}}}
    monkeypatch.delenv(DASK_SCHEDULER_ENV)
    assert default_execution() == {"in_process": {}}


def test_dask_cluster_schema_mirrors_dagster_dask():
    from dagster_dask import dask_executor

    ours = DASK_CONFIG.config_type.fields["cluster"].config_type.fields
    theirs = dask_executor.config_schema.as_field().config_type.fields["cluster"].config_type.fields
    assert set(ours) == set(theirs)


# -- lineage metadata --------------------------------------------------------------------------------

def test_every_asset_has_description_kinds_owners_group_and_code_version():
    repo = defs.get_repository_def()
    for node in repo.asset_graph.asset_nodes:
        name = node.key.to_user_string()
        assert node.description and len(node.description) > 40, name
        assert node.kinds, name
        assert node.owners, name
        assert node.group_name and node.group_name != "default", name
        assert node.code_version, name
