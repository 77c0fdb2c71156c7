"""The executor of every job: in-process (default), multiprocess, or a dask.distributed cluster.

In-process by default because every run is already its own process — one run per instance_model
partition, and the plan and consolidation runs are chains of steps — so the multiprocess
executor's extra process per step only adds start-up time. Another executor is selected per run
by configuration (the Launchpad, a backfill's or a sensor's run config)::

    execution:
      config:
        dask:
          cluster:
            existing: {address: "tcp://dask-scheduler:8786"}   # a running multi-node cluster
            # or local: {n_workers: 2, processes: true, threads_per_worker: 1}

or for every run of the code location by the environment: ``ENSEMBLE_ASSETS_DASK_SCHEDULER=
tcp://host:8786`` makes the existing cluster the default. Each step (here: the one
``instance_model`` partition of a run) is then executed by a Dask worker, which loads the code
location and writes to the same Dagster instance and data root — workers need the package, the
dataset path and the instance storage (a shared filesystem, or Postgres) like any run worker.

``dagster_dask`` (and ``dask.distributed``, ~150 MB resident) is imported only by runs that
select Dask; the cluster schema below mirrors ``dagster_dask.dask_executor``'s (a test keeps them
equal). Step retries (``RetryPolicy``) and pools are honoured by the in-process and multiprocess executors; the
Dask executor does not retry steps (run-level retries, dagster.yaml ``run_retries``, still apply)
and pools limit runs only through the run queue (``granularity: run``).

Two changes to dagster-dask 0.29.27's executor (``RunScopedDaskExecutor``): (1) its Dask task key
is ``<job>.<step>``, so concurrent runs of one job on a shared cluster — one run per partition is
exactly that — get the same key, and Dask hands every run after the first the first run's result
without executing it (dagster-io/dagster#21418): the key here includes the run id; (2) with
dask 2026.8 its task arguments fail to submit (dask walks into the ``DagsterRun`` NamedTuple, whose
``RunOpConcurrency`` record forbids iteration — runs of pooled assets have one): they are passed
as one opaque object here.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster._core.definitions.executor_definition import (  # the built-in executors' own config
    IN_PROC_CONFIG,
    MULTI_PROC_CONFIG,
    _core_in_process_executor_creation,
    _core_multiprocess_executor_creation,
    multiple_process_executor_requirements,
)

DASK_SCHEDULER_ENV = "ENSEMBLE_ASSETS_DASK_SCHEDULER"
DASK_CLUSTER_TYPES = ("local", "yarn", "ssh", "pbs", "moab", "sge", "lsf", "slurm", "oar", "kube")

DASK_CONFIG = dg.Field(
    {
        "cluster": dg.Field(dg.Selector({
            "existing": dg.Field({"address": dg.StringSource}, description="Connect to an existing scheduler."),
            **{t: dg.Field(dg.Permissive(), is_required=False, description=f"{t} cluster configuration "
                           "(keyword arguments of its Dask cluster class)") for t in DASK_CLUSTER_TYPES},
        })),
    },
    description="Execute each step as a task on a dask.distributed cluster (dagster-dask).",
)


_CLUSTER_CLASSES = {
    "local": ("dask.distributed", "LocalCluster"), "ssh": ("dask.distributed", "SSHCluster"),
    "yarn": ("dask_yarn", "YarnCluster"), "pbs": ("dask_jobqueue", "PBSCluster"),
    "moab": ("dask_jobqueue", "MoabCluster"), "sge": ("dask_jobqueue", "SGECluster"),
    "lsf": ("dask_jobqueue", "LSFCluster"), "slurm": ("dask_jobqueue", "SLURMCluster"),
    "oar": ("dask_jobqueue", "OARCluster"), "kube": ("dask_kubernetes", "KubeCluster"),
}


class _Opaque:
    """Arguments Dask must ship as they are: dask ≥ 2025 walks into tuple arguments, and a
    ``DagsterRun`` (a NamedTuple) holds a ``@record`` that forbids iteration."""

    def __init__(self, *args):
        self.args = args


def _execute_step_on_worker(dependencies, opaque: _Opaque):
    from dagster_dask.executor import query_on_dask_worker

    return query_on_dask_worker(dependencies, *opaque.args)


def run_scoped_dask_executor(cluster_type: str, cluster_config: dict) -> dg.Executor:
    """dagster-dask's executor, with Dask task keys that include the run id (see the module doc)."""
    import importlib

    import dask.distributed
    from dagster._core.errors import raise_execution_interrupts
    from dagster._utils import iterate_with_context
    from dagster_dask.executor import DaskExecutor, get_dask_resource_requirements

    class RunScopedDaskExecutor(DaskExecutor):
        def execute(self, plan_context, execution_plan):
            if not plan_context.instance.is_persistent:
                raise dg.DagsterInvariantViolationError("Dask execution requires a persistent DagsterInstance")
            job_name, run = plan_context.job_name, plan_context.dagster_run
            created = None
            if self.cluster_type == "existing":
                cluster = self.cluster_configuration["address"]
            elif self.cluster_type in _CLUSTER_CLASSES:
                module, cls = _CLUSTER_CLASSES[self.cluster_type]
                kwargs = self.build_dict(job_name)
                if self.cluster_type == "local":  # loopback by default: Dask's own default listens on every interface
                    kwargs.setdefault("host", "127.0.0.1")
                    kwargs.setdefault("dashboard_address", "127.0.0.1:0")
                cluster = created = getattr(importlib.import_module(module), cls)(**kwargs)
            else:
                raise ValueError(f"unknown Dask cluster type {self.cluster_type!r}")
            try:
                with dask.distributed.Client(cluster) as client:
                    futures, by_step = [], {}
                    for level in execution_plan.get_steps_to_execute_by_level():
                        for step in level:
                            deps = [by_step[k] for si in step.step_inputs for k in si.dependency_keys]
                            future = client.submit(
                                _execute_step_on_worker, deps,
                                _Opaque(plan_context.reconstructable_job, run, plan_context.run_config, [step.key],
                                        plan_context.instance.get_ref(), execution_plan.known_state),
                                key=f"{job_name}.{step.key}.{run.run_id}",
                                resources=get_dask_resource_requirements(step.tags))
                            futures.append(future)
                            by_step[step.key] = future
                    done = dask.distributed.as_completed(futures, with_results=True)
                    for _, events in iterate_with_context(raise_execution_interrupts, done):
                        yield from events
            finally:
                if created is not None:
                    created.close()

    return RunScopedDaskExecutor(cluster_type, cluster_config)


def default_execution() -> dict:
    address = os.environ.get(DASK_SCHEDULER_ENV, "").strip()
    if address:
        return {"dask": {"cluster": {"existing": {"address": address}}}}
    return {"in_process": {}}


def _requirements(executor_config: dict):
    return multiple_process_executor_requirements() if ("multiprocess" in executor_config
                                                        or "dask" in executor_config) else []


@dg.executor(
    name="ensemble_executor",
    config_schema=dg.Field(
        dg.Selector({"multiprocess": MULTI_PROC_CONFIG, "in_process": IN_PROC_CONFIG, "dask": DASK_CONFIG}),
        default_value=default_execution(),
    ),
    requirements=_requirements,
)
def ensemble_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """In-process by default; ``multiprocess`` runs each step in its own process, ``dask`` on a
    dask.distributed cluster."""
    ((kind, config),) = init_context.executor_config.items()
    if kind == "dask":
        ((cluster_type, cluster_config),) = config["cluster"].items()
        return run_scoped_dask_executor(cluster_type, cluster_config)
    if kind == "in_process":
        return _core_in_process_executor_creation(config)
    return _core_multiprocess_executor_creation(config)
