"""DuckDB for the data layer: quoted identifiers and in-memory connections with their own spill directory."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any


def _quote(name: str) -> str:
    """A SQL identifier for any column name (quotes doubled): column names come from the input
    files and are never trusted. Values never go into SQL text at all: they are parameters or
    registered Arrow tables."""
    return '"' + name.replace('"', '""') + '"'


def duckdb_connect(threads: int = 2, memory_limit: str = "2GB", **config: Any):
    """An in-memory DuckDB connection that spills into a directory of its own and counts NaN right.

    DuckDB's default spill directory is ``.tmp`` in the working directory, shared by every
    process started there (two instance runs in parallel would spill into, and on close remove,
    the same directory). Here each connection gets a fresh path under the system temp directory,
    which DuckDB creates only if it spills and removes on close."""
    import duckdb

    spill = Path(tempfile.gettempdir()) / f"ensemble_assets-duckdb-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    con = duckdb.connect(config={"threads": threads, "memory_limit": memory_limit,
                                 "temp_directory": str(spill), **config})
    con.execute("SET enable_progress_bar = false")  # no progress bars in run logs
    # DuckDB 2.0.1 folds isnan(x) to false when a Parquet column's min/max statistics (which
    # leave NaN out) exist, so NaN counts came out 0; without this optimizer they are right.
    con.execute("SET disabled_optimizers = 'statistics_propagation'")
    return con
