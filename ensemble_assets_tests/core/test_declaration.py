"""A dataset's declaration (dataset.json): parsed and validated naming the file and key; the
gene-context features follow its row selection unless set explicitly, and the manifest says why."""

import json
import shutil

import pytest

from ensemble_assets.core.data.contract import DatasetError, open_dataset
from ensemble_assets.core.data.declaration import (
    check_chromosomes,
    declaration_path,
    gene_context_decision,
    read_declaration,
)
from ensemble_assets.core.data.inventory import build_gene_inventory
from ensemble_assets.core.data.schema import CANDIDATE_MIN_SCORE, GENE_CONTEXT_FEATURES
from ensemble_assets.core.data.screening import ScreeningSettings, screen_features

ATHA_LIKE = {
    "format": "metaspliceai-positions", "name": "x", "species": "Arabidopsis thaliana",
    "assembly": "TAIR10.1", "chromosomes": ["NC_003070.9"], "annotation": "RefSeq",
    "base_model": "SpliceAI-10k", "position": "gene-relative",
    "row_selection": {"every_position_with_max_score_at_least": 0.02, "max_score": "max(donor_score, acceptor_score)",
                      "also": ["every annotated donor and acceptor"]},
}


def _write(tmp_path, data) -> None:
    (tmp_path / "master").mkdir(exist_ok=True)
    (tmp_path / "dataset.json").write_text(data if isinstance(data, str) else json.dumps(data))


def test_a_declaration_is_read_beside_master(tmp_path):
    _write(tmp_path, ATHA_LIKE)
    d = read_declaration(tmp_path)
    assert d.species == "Arabidopsis thaliana" and d.chromosomes == ("NC_003070.9",)
    assert d.row_selection.every_position_with_max_score_at_least == 0.02
    assert d.holds_every_position_scoring(CANDIDATE_MIN_SCORE) and not d.holds_every_position_scoring(0.01)
    assert "every position with max(donor_score, acceptor_score) ≥ 0.02" in d.row_selection_text()
    # the master directory itself, or a file in it, finds the same declaration
    assert declaration_path(tmp_path / "master") == tmp_path / "dataset.json"
    assert read_declaration(tmp_path / "master") == d
    assert read_declaration(tmp_path / "nothing-here") is None


@pytest.mark.parametrize("data, key", [
    ({"species": 3}, "species"),
    ({"chromosomes": "chr1"}, "chromosomes"),
    ({"row_selection": {"every_position_with_max_score_at_least": 2}}, "row_selection.every_position_with_max_score_at_least"),
    ({"row_selection": {"every_position_with_max_score_at_least": "0.02"}},
     "row_selection.every_position_with_max_score_at_least"),
    ({"row_selection": {"every_position_with_max_score_at_least": 0.02, "max_score": "neither_score"}},
     "row_selection.max_score"),
    ({"row_selection": {"every_position_with_max_scor_at_least": 0.02}}, "row_selection.every_position_with_max_scor_at_least"),
    ({"row_selection": [0.02]}, "row_selection"),
    ({"specie": "x"}, "specie"),
])
def test_bad_declarations_name_the_file_and_the_key(tmp_path, data, key):
    _write(tmp_path, data)
    with pytest.raises(DatasetError) as err:
        read_declaration(tmp_path)
    assert str(tmp_path / "dataset.json") in str(err.value) and f"key '{key}'" in str(err.value)


def test_a_declaration_that_is_not_json_names_the_file(tmp_path):
    _write(tmp_path, "{not json")
    with pytest.raises(DatasetError, match="dataset.json: not valid JSON"):
        read_declaration(tmp_path)
    _write(tmp_path, "[1]")
    with pytest.raises(DatasetError, match="must be a JSON object"):
        read_declaration(tmp_path)


def _declared(tmp_path, threshold):
    rs = {} if threshold is None else {"every_position_with_max_score_at_least": threshold}
    _write(tmp_path, {"row_selection": rs})
    return read_declaration(tmp_path)


def test_gene_context_follows_the_declaration_unless_set(tmp_path):
    on = gene_context_decision(None, _declared(tmp_path, 0.02))
    assert on.on and "0.02" in on.reason and "dataset.json" in on.reason
    assert gene_context_decision(None, _declared(tmp_path, CANDIDATE_MIN_SCORE)).on   # exactly the bound
    above = gene_context_decision(None, _declared(tmp_path, 0.2))
    assert not above.on and "0.2" in above.reason and str(CANDIDATE_MIN_SCORE) in above.reason
    silent = gene_context_decision(None, _declared(tmp_path, None))
    assert not silent.on and "every_position_with_max_score_at_least" in silent.reason
    none = gene_context_decision(None, None)
    assert not none.on and "no dataset.json" in none.reason
    # an explicit setting wins either way
    assert gene_context_decision(True, None).on and gene_context_decision(True, _declared(tmp_path, 0.2)).on
    off = gene_context_decision(False, _declared(tmp_path, 0.02))
    assert not off.on and "explicitly" in off.reason


def test_declared_chromosomes_must_cover_the_data(tmp_path):
    _write(tmp_path, {"chromosomes": ["chr1", "chr2"]})
    d = read_declaration(tmp_path)
    check_chromosomes(d, ["chr1"])
    check_chromosomes(None, ["chrZ"])
    with pytest.raises(DatasetError, match=r"key 'chromosomes'.*chr3"):
        check_chromosomes(d, ["chr1", "chr3"])


@pytest.fixture(scope="module")
def undeclared(tiny_dataset, tmp_path_factory):
    """The tiny demo dataset without its dataset.json."""
    out = tmp_path_factory.mktemp("undeclared")
    shutil.copytree(tiny_dataset / "master", out / "master")
    return out


def _manifest(path, settings=ScreeningSettings()):
    ds = open_dataset(path)
    genes = build_gene_inventory(ds, threads=1)[0].column("gene_id").to_pylist()
    return {r["column"]: r for r in screen_features(ds, genes, settings, threads=1).to_pylist()}


def test_screening_turns_gene_context_on_for_the_declared_demo_and_says_why_not_otherwise(tiny_dataset, undeclared):
    assert read_declaration(tiny_dataset).holds_every_position_scoring(CANDIDATE_MIN_SCORE)
    declared = _manifest(tiny_dataset)
    assert all(declared[f]["is_feature"] for f in GENE_CONTEXT_FEATURES)
    plain = _manifest(undeclared)
    for f in GENE_CONTEXT_FEATURES:
        assert not plain[f]["is_feature"] and plain[f]["reason"].startswith("gene context off: the dataset has no "
                                                                           "dataset.json"), plain[f]
    forced = _manifest(undeclared, ScreeningSettings(gene_context=True))
    assert all(forced[f]["is_feature"] for f in GENE_CONTEXT_FEATURES)
    refused = _manifest(tiny_dataset, ScreeningSettings(gene_context=False))
    assert all(not refused[f]["is_feature"] and "explicitly" in refused[f]["reason"] for f in GENE_CONTEXT_FEATURES)


@pytest.mark.realdata
def test_atha_chr1_declaration_turns_gene_context_on(atha_chr1):
    d = read_declaration(atha_chr1)
    assert d is not None and d.chromosomes == ("NC_003070.9",)
    assert gene_context_decision(None, d).on
