"""Security: nothing read back can execute code, SQL never carries data, partition keys and gene
ids never become paths, and every server the project starts listens on 127.0.0.1 only."""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ensemble_assets.core import artifacts, stages
from ensemble_assets.core.data import inventory as inventory_mod
from ensemble_assets.core.data import streaming as dataset_mod
from ensemble_assets.core.data.contract import open_dataset
from ensemble_assets.core.data.inventory import build_gene_inventory
from ensemble_assets.core.data.screening import feature_columns, screen_features
from ensemble_assets.core.data.streaming import iter_subset_batches
from ensemble_assets.core.io import read_json, write_json
from ensemble_assets.core.planning.plan import PlanError
from ensemble_assets_tests.conftest import REPO

from . import faults as F
from .harness import case_config, run_graph

PACKAGE = REPO / "ensemble_assets"

# modules whose loaders can run code from the bytes they read
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "copyreg"}
UNSAFE_CALLS = {"read_pickle", "unsafe_load", "full_load", "eval", "exec", "PyExtensionType"}


def unsafe_uses(source: str, filename: str = "<source>") -> list[str]:
    """Imports of deserializers that run code, and calls that load pickles or run strings."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"{filename}:{node.lineno} import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{filename}:{node.lineno} from {node.module} import ...")
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in UNSAFE_CALLS:
                found.append(f"{filename}:{node.lineno} {name}(...)")
            if name in ("load", "loads") and isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) \
                    and fn.value.id in ("yaml", "torch"):
                found.append(f"{filename}:{node.lineno} {fn.value.id}.{name}(...)")
            if any(k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                   for k in node.keywords):
                found.append(f"{filename}:{node.lineno} allow_pickle")
    return found


def test_the_scanner_finds_what_it_looks_for():
    sample = ("import pickle\nfrom joblib import load\nimport numpy as np\nx = np.load('a', allow_pickle=True)\n"
              "import pandas as pd\npd.read_pickle('p')\nimport yaml\nyaml.load(s)\neval('1')\n")
    assert len(unsafe_uses(sample)) == 6


def test_no_code_executing_deserializer_is_used_anywhere_in_the_package():
    """Everything the platform reads back is JSON, Parquet (Arrow data, no Python objects) or
    XGBoost's own UBJSON model format, parsed by XGBoost's C++ code. The Dagster assets return
    MaterializeResult, so Dagster's default (pickling) IO manager never stores or loads an
    output (test_dagster checks its storage holds no asset file)."""
    found = [u for f in sorted(PACKAGE.rglob("*.py")) for u in unsafe_uses(f.read_text(), str(f.relative_to(REPO)))]
    assert found == []


def test_a_parquet_file_carrying_a_pickled_extension_type_is_never_unpickled(tiny_dataset, tmp_path):
    """CVE-2023-47248: pyarrow < 14 unpickled the metadata of the ``arrow.py_extension_type``
    extension type when reading a file. A file carrying one goes through every reader here."""
    marker = tmp_path / "UNPICKLED"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    def plant(i, t):
        if i != 0:
            return t
        field = pa.field("3mer_AAA", pa.float64(), metadata={
            b"ARROW:extension:name": b"arrow.py_extension_type",
            b"ARROW:extension:metadata": pickle.dumps(Payload())})
        return t.set_column(t.schema.get_field_index("3mer_AAA"), field, t.column("3mer_AAA"))

    data = F.derive(tiny_dataset, tmp_path / "d", plant)
    ds = open_dataset(data)
    inv, _ = build_gene_inventory(ds, threads=1)
    features, fill = feature_columns(screen_features(ds, inv.column("gene_id").to_pylist()))
    assert "3mer_AAA" in features
    sum(b.X.shape[0] for b in iter_subset_batches(ds, None, features, fill))
    pq.read_table(F.master_files(data)[0])
    assert not marker.exists()


class _Recorder:
    """A DuckDB connection that records every SQL text it is given."""

    def __init__(self, con, texts: list[str]):
        self._con, self._texts = con, texts

    def sql(self, query, *a, **kw):
        self._texts.append(query)
        return self._con.sql(query, *a, **kw)

    def execute(self, query, *a, **kw):
        self._texts.append(query)
        return self._con.execute(query, *a, **kw)

    def __getattr__(self, name):
        return getattr(self._con, name)


def test_sql_takes_values_as_parameters_and_quotes_every_column_name(tiny_dataset, tmp_path, monkeypatch):
    """Hostile gene ids, column names and a quote in the dataset's path: every query runs, no gene
    id or path is ever part of an SQL text (they are parameters or registered Arrow tables), and
    hostile columns are read as what they are."""
    genes = sorted({g for f in F.master_files(tiny_dataset) for g in pq.read_table(f, columns=["gene_id"]).column(0).to_pylist()})
    mapping = dict(zip(genes, F.HOSTILE_GENE_IDS))
    rng = np.random.default_rng(5)

    def hostile(i, t):
        t = F.rename_genes(t, mapping)
        for c in F.HOSTILE_COLUMNS:
            t = F.set_column(t, c, rng.normal(size=t.num_rows))
        return t

    data = F.derive(tiny_dataset, tmp_path / "it's \"data\"; DROP TABLE x", hostile)
    texts: list[str] = []
    real = dataset_mod.duckdb_connect
    monkeypatch.setattr(dataset_mod, "duckdb_connect", lambda *a, **kw: _Recorder(real(*a, **kw), texts))
    monkeypatch.setattr(inventory_mod, "duckdb_connect", lambda *a, **kw: _Recorder(real(*a, **kw), texts))

    ds = open_dataset(data)
    inv, profile = build_gene_inventory(ds, threads=1)
    assert set(F.HOSTILE_GENE_IDS) <= set(inv.column("gene_id").to_pylist())
    manifest = {r["column"]: r for r in screen_features(ds, inv.column("gene_id").to_pylist()).to_pylist()}
    features, fill = feature_columns(pa.Table.from_pylist(list(manifest.values())))
    chosen = F.HOSTILE_GENE_IDS[:6]
    batches = list(iter_subset_batches(ds, chosen, features, fill))
    assert texts, "the recorder saw no SQL"

    def leaked(v: str, q: str) -> bool:
        quoted = {f"'{v}'", "'" + v.replace("'", "''") + "'"}  # as an SQL string literal
        # "$files" is the name of our own parameter (and here a column too), NULL an SQL word:
        # those only count as string literals
        return any(x in q for x in quoted) or (v not in ("$files", "NULL") and len(v.strip()) > 3 and v in q)

    values = [*F.HOSTILE_GENE_IDS, *map(str, ds.files), str(data)]
    leaks = [(v, q) for q in texts for v in values if leaked(v, q)]
    assert leaks == []
    for c in F.HOSTILE_COLUMNS:
        assert any('"' + c.replace('"', '""') + '"' in q for q in texts), f"{c!r} never queried quoted"
        col = np.concatenate([pq.read_table(f, columns=[c]).column(0).to_numpy() for f in ds.files])
        assert manifest[c]["is_feature"] and manifest[c]["mean"] == pytest.approx(col.mean())
    streamed_genes = set(np.concatenate([b.gene_id for b in batches]).tolist())
    assert streamed_genes == set(chosen)
    X = np.concatenate([b.X for b in batches])
    j = features.index('a"b')
    expected = np.concatenate([pq.read_table(f).filter(pa.compute.is_in(pq.read_table(f).column("gene_id"),
                               pa.array(chosen))).column('a"b').to_numpy() for f in ds.files])
    np.testing.assert_array_equal(X[:, j], expected.astype(np.float32))


@pytest.mark.parametrize("key", ["../../etc", "s00-1234abcd/../../x", "/abs", "..", ".hidden", "a b"])
def test_a_partition_key_cannot_leave_the_instances_directory(key, tiny_dataset, tmp_path):
    cfg = case_config(tmp_path / "root", tiny_dataset)
    with pytest.raises(ValueError, match="not a safe path component"):
        cfg.instance_dir(key)
    assert run_graph(cfg, until="training_plan") == (None, None)
    with pytest.raises(PlanError, match="not in the current training plan"):
        stages.run_instance(cfg, key)
    # even a plan file edited to carry such a key is refused before anything is trained or written
    plan_path = artifacts.paths(cfg)["plan"]
    plan = read_json(plan_path)
    plan["subsets"][0]["key"] = key
    write_json(plan_path, plan)
    with pytest.raises(ValueError, match="not a safe path component"):
        stages.run_instance(cfg, key)
    assert not (tmp_path / "root" / "artifacts" / "instances").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


# a shell command that starts a server: `dagster dev`, `dagster api grpc`, `dagster code-server
# start`, `dagster-webserver -...` (not a mention such as a dependency pin)
SERVER_COMMAND = re.compile(r"(?:^|[\s/])(?:dagster\s+(?:dev|api\s+grpc|code-server\s+start)(?:\s|$)"
                            r"|dagster-webserver\s+-)")
LOOPBACK = re.compile(r"(?:-h|--host|--dagit-host)[\s=]+['\"]?(?:127\.0\.0\.1|localhost)\b")
SERVER_ARGV = (("dagster", "dev"), ("dagster", "api", "grpc"), ("dagster", "code-server", "start"),
               ("dagster-webserver",), ("dagster_webserver",))


def _server_argvs(tree: ast.AST):
    """String lists/tuples in Python source that are the argv of a server (subprocess style);
    names bound to a string constant anywhere in the module count as that string."""
    consts = {t.id: n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
              and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
              for t in n.targets if isinstance(t, ast.Name)}

    def word(e: ast.AST) -> str:
        if isinstance(e, ast.Constant) and isinstance(e.value, str):
            return e.value
        return consts.get(e.id, "") if isinstance(e, ast.Name) else ""

    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)):
            words = [word(e) for e in node.elts]
            tails = [w.rsplit("/", 1)[-1] for w in words]
            for start in range(len(tails)):
                if any(tuple(tails[start:start + len(s)]) == s for s in SERVER_ARGV):
                    yield node.lineno, words
                    break


def _shell_files() -> list[Path]:
    files = [REPO / "Makefile"]
    for folder in ("scripts", ".ci"):
        files += [p for p in (REPO / folder).rglob("*") if p.is_file()]
    return [f for f in files if f.exists()]


def _python_files() -> list[Path]:
    return [p for folder in ("ensemble_assets", "ensemble_assets_tests") for p in (REPO / folder).rglob("*.py")
            if p.resolve() != Path(__file__).resolve()]


def test_the_server_scanners_find_a_command_without_a_loopback_host():
    assert SERVER_COMMAND.search("\t$(VENV)/dagster dev -p 3000") and not LOOPBACK.search("$(VENV)/dagster dev -p 3000")
    assert LOOPBACK.search("dagster dev -h 127.0.0.1 -p 3000") and LOOPBACK.search("dagster dev --host=localhost")
    assert not SERVER_COMMAND.search('"dagster-webserver==1.13.27",')
    tree = ast.parse('HOST = "127.0.0.1"\ncmd = [sys.executable, "-m", "dagster", "dev", "-p", "3000"]\n'
                     'ok = ["/venv/bin/dagster-webserver", "-h", HOST]\n')
    assert [argv[2:4] for _, argv in _server_argvs(tree)] == [["dagster", "dev"], ["127.0.0.1"]]


def test_every_server_the_project_starts_binds_to_loopback():
    """The Makefile's ``ui`` target, scripts, CI and tests: every webserver / code server command
    names host 127.0.0.1, and no file binds 0.0.0.0 (or '::'). Dagster's own defaults are loopback too."""
    from dagster_webserver.cli import DEFAULT_WEBSERVER_HOST

    assert DEFAULT_WEBSERVER_HOST == "127.0.0.1"
    problems, commands = [], 0
    config = [REPO / n for n in ("workspace.yaml", "dagster.yaml", "pyproject.toml")]
    for f in [*_shell_files(), *_python_files(), *config]:
        if re.search(r"0\.0\.0\.0|--host[\s=]+['\"]?::|-h\s+::|host\s*=\s*['\"]::", f.read_text(errors="replace")):
            problems.append(f"{f.relative_to(REPO)}: binds all interfaces")
    for f in _shell_files():
        for line in f.read_text(errors="replace").splitlines():
            if SERVER_COMMAND.search(line) and not line.lstrip().startswith("#"):
                commands += 1
                if not LOOPBACK.search(line):
                    problems.append(f"{f.relative_to(REPO)}: {line.strip()}")
    for f in _python_files():
        for lineno, argv in _server_argvs(ast.parse(f.read_text(), str(f))):
            commands += 1
            host = [argv[i + 1] for i, w in enumerate(argv[:-1]) if w in ("-h", "--host")]
            if host[-1:] not in (["127.0.0.1"], ["localhost"]):
                problems.append(f"{f.relative_to(REPO)}:{lineno}: {argv}")
    assert problems == []
    assert commands >= 1  # the Makefile's ui target at least
