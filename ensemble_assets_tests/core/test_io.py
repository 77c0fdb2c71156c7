import pytest

from ensemble_assets.core.io import atomic_directory, atomic_path, safe_component, write_json


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    f = tmp_path / "a.json"
    write_json(f, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(f) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("crash mid-write")
    assert f.read_text().strip().endswith("}") and '"v": 1' in f.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    d = tmp_path / "model"
    with atomic_directory(d) as tmp:
        (tmp / "x").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(d) as tmp:
            (tmp / "x").write_text("new")
            (tmp / "y").write_text("partial")
            raise RuntimeError("crash")
    assert sorted(p.name for p in d.iterdir()) == ["x"] and (d / "x").read_text() == "old"
    with atomic_directory(d) as tmp:
        (tmp / "z").write_text("new")
    assert sorted(p.name for p in d.iterdir()) == ["z"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "", ".hidden", "a b", "é"])
def test_path_components_cannot_escape(bad):
    with pytest.raises(ValueError):
        safe_component(bad)
    assert safe_component("s00-1a2b3c4d") == "s00-1a2b3c4d"
