"""Scale-out: two instance_model partitions trained on a dask.distributed LocalCluster of two worker
processes (the Dask executor, selected by run config) give the same models as the default (in-process)
executor."""

from __future__ import annotations

import os
import shutil

import dagster as dg
import pytest

from ensemble_assets.core import artifacts
from ensemble_assets.defs.dataset.assets import feature_screening, gene_inventory
from ensemble_assets.defs.partitions import gene_subsets
from ensemble_assets.defs.planning.assets import training_plan
from ensemble_assets.defs.training.assets import instance_model
from ensemble_assets.runs import materialize
from ensemble_assets_tests.conftest import make_config
from ensemble_assets_tests.e2e.partition_runs import REPO, run_partitions

pytestmark = pytest.mark.e2e


def model_identity(cfg, key: str) -> dict:
    """What must not depend on the executor: booster files (SHA-256), trees, out-of-fold metrics."""
    m = artifacts.instance_manifest(cfg, key)
    return {"boosters": {f: h for f, h in m["files"].items() if f.startswith("booster_")},
            "n_estimators": m["n_estimators"], "oof": m["metrics"]["oof"], "genes": m["n_genes"], "rows": m["n_rows"]}


def test_two_partitions_on_a_dask_local_cluster_match_the_default_executor(tiny_dataset, tmp_path):
    from dask.distributed import Client, LocalCluster, get_task_stream

    cfg = make_config(tmp_path / "root", tiny_dataset, genes_per_instance=25)
    home = tmp_path / "home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        ok, err = materialize(cfg, instance, [gene_inventory, feature_screening, training_plan])
        assert ok, err
        keys = sorted(instance.get_dynamic_partitions(gene_subsets.name))[:2]
        assert len(keys) == 2

        run_partitions(home, cfg.root, keys, {"in_process": {}})      # the default executor
        reference = {k: model_identity(cfg, k) for k in keys}
        for k in keys:                                   # forget the models: Dask must train them anew
            shutil.rmtree(cfg.instance_dir(k))

        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                          env={"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)},
                          ) as cluster, Client(cluster) as client:
            worker_pids = set(client.run(os.getpid).values())
            assert len(worker_pids) == 2 and os.getpid() not in worker_pids
            with get_task_stream(client=client) as tasks:
                run_partitions(home, cfg.root, keys, {"dask": {"cluster": {"existing": {"address": cluster.scheduler_address}}}})
            steps = [t for t in tasks.data if "instance_model" in str(t["key"])]
            assert len(steps) == 2                           # each partition's step ran as a Dask task
            assert len({t["worker"] for t in steps}) == 2    # on both worker processes

        for k in keys:
            assert model_identity(cfg, k) == reference[k], k
            ev = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=instance_model.key, asset_partitions=[k]), limit=1).records[0]
            meta = ev.asset_materialization.metadata
            # lineage: each partition's materialization carries its subset, size, metric and memory
            assert meta["gene_subset"].value == k
            assert meta["genes"].value == reference[k]["genes"] and meta["rows"].value == reference[k]["rows"]
            assert meta["oof_macro_f1"].value == pytest.approx(reference[k]["oof"]["macro_f1"])
            assert meta["peak_rss_MB"].value > 0
