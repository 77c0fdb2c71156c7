"""Run one instance_model partition as its own process (as a run worker would), with a chosen
executor: ``python -m ensemble_assets_tests.e2e.partition_runs KEY DATA_ROOT EXECUTION_JSON``
with ``DAGSTER_HOME`` set. Separate processes, because Dagster's run setup (logging
configuration) is not thread-safe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def instance_training_job():
    """Module-level, so that step processes and Dask workers can reconstruct the job."""
    from ensemble_assets.definitions import defs

    return defs.resolve_job_def("instance_training_job")


def run_partitions(home: Path, data_root: Path, keys: list[str], execution: dict, timeout: float = 600) -> None:
    """Launch one run per partition, all at once, and wait; fail with their output if any failed."""
    env = {**os.environ, "DAGSTER_HOME": str(home),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    procs = {k: subprocess.Popen([sys.executable, "-m", "ensemble_assets_tests.e2e.partition_runs", k, str(data_root),
                                  json.dumps(execution)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for k in keys}
    failed = {}
    try:
        for k, p in procs.items():
            out, _ = p.communicate(timeout=timeout)
            if p.returncode != 0:
                failed[k] = out[-3000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    assert not failed, failed


def main(key: str, data_root: str, execution: str) -> int:
    import dagster as dg

    from ensemble_assets_tests.e2e.partition_runs import instance_training_job as job_fn  # not __main__

    run_config = {"execution": {"config": json.loads(execution)},
                  "resources": {"ensemble": {"config": {"data_root": data_root}}}}
    with dg.DagsterInstance.get() as instance:
        with dg.execute_job(dg.reconstructable(job_fn), instance=instance, run_config=run_config,
                            tags={"dagster/partition": key}) as result:
            return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
