"""The plan-inputs fingerprint (core/planning/freshness.py) identifies the dataset by its content:
a touch, a move or a copy keep it; a changed, renamed, added or removed file changes it."""

import os
import shutil
from dataclasses import replace

import pyarrow.parquet as pq

from ensemble_assets.core.config import PlatformConfig
from ensemble_assets.core.planning.freshness import dataset_content_digest, plan_inputs_fingerprint


def _copy(src, dst):
    return shutil.copytree(src, dst, copy_function=shutil.copy)   # new modification times


def test_touch_move_and_copy_keep_the_digest(tiny_dataset, tmp_path):
    ref = dataset_content_digest(tiny_dataset)
    here = _copy(tiny_dataset, tmp_path / "a" / "demo")
    assert dataset_content_digest(here) == ref
    for f in (here / "master").glob("*.parquet"):
        os.utime(f, ns=(1_000_000_000, 2_000_000_000))
    assert dataset_content_digest(here) == ref
    moved = shutil.move(here, tmp_path / "elsewhere")
    assert dataset_content_digest(moved) == ref
    flat = tmp_path / "flat"   # the files without the master/ level
    _copy(tiny_dataset / "master", flat)
    assert dataset_content_digest(flat) == ref


def test_changed_renamed_added_or_removed_files_change_the_digest(tiny_dataset, tmp_path):
    ref = dataset_content_digest(tiny_dataset)
    files = sorted((tiny_dataset / "master").glob("*.parquet"))
    d = _copy(tiny_dataset, tmp_path / "changed")
    t = pq.read_table(d / "master" / files[0].name)
    pq.write_table(t.slice(1), d / "master" / files[0].name)   # one row fewer
    assert dataset_content_digest(d) != ref
    d = _copy(tiny_dataset, tmp_path / "renamed")
    os.rename(d / "master" / files[0].name, d / "master" / "z.parquet")
    assert dataset_content_digest(d) != ref
    d = _copy(tiny_dataset, tmp_path / "added")
    shutil.copy(files[0], d / "master" / "extra.parquet")
    assert dataset_content_digest(d) != ref
    d = _copy(tiny_dataset, tmp_path / "removed")
    (d / "master" / files[0].name).unlink()
    assert dataset_content_digest(d) != ref
    assert dataset_content_digest(tmp_path / "absent") != ref


def test_a_one_file_dataset_is_its_content_whatever_its_name(tiny_dataset, tmp_path):
    f = sorted((tiny_dataset / "master").glob("*.parquet"))[0]
    a, b = shutil.copy(f, tmp_path / "a.parquet"), shutil.copy(f, tmp_path / "b.parquet")
    assert dataset_content_digest(a) == dataset_content_digest(b)


def test_the_fingerprint_holds_the_settings_but_not_where_the_data_lies(tiny_dataset, tmp_path):
    moved = _copy(tiny_dataset, tmp_path / "moved")
    a = PlatformConfig(data_root=str(tmp_path / "r1"), dataset=str(tiny_dataset))
    b = PlatformConfig(data_root=str(tmp_path / "r2"), dataset=str(moved))
    assert "dataset" not in a.settings_dict() and "data_root" not in a.settings_dict()
    assert (plan_inputs_fingerprint(a.dataset_path, a.settings_dict())
            == plan_inputs_fingerprint(b.dataset_path, b.settings_dict()))
    c = replace(b, plan=replace(b.plan, seed=7))
    assert (plan_inputs_fingerprint(c.dataset_path, c.settings_dict())
            != plan_inputs_fingerprint(b.dataset_path, b.settings_dict()))
