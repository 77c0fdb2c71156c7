"""Read failures of a scan, turned into errors that name the file and column at fault."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ensemble_assets.core.data.contract import DatasetError, ParquetDataset


def _is_read_error(exc: BaseException) -> bool:
    try:
        import duckdb

        if isinstance(exc, duckdb.Error):
            return True
    except ImportError:
        pass
    return isinstance(exc, (pa.ArrowException, OSError))


def locate_read_error(ds: ParquetDataset, columns: Sequence[str] | None, exc: BaseException) -> DatasetError:
    """Turn a failed scan into a DatasetError naming the file and column that cannot be decoded.

    DuckDB's errors for a corrupt page do not say which file it was in; each file's columns are
    re-read with pyarrow (only on this error path) to find it."""
    for f, cols in zip(ds.files, ds.columns_per_file):
        try:
            pf = pq.ParquetFile(f)
        except Exception as err:  # noqa: BLE001 - any failure here is the answer
            return DatasetError(f"{f}: not a readable Parquet file ({err})")
        wanted = [c for c in (columns if columns is not None else ds.columns) if c in cols]
        for c in wanted:
            try:
                pf.read(columns=[c], use_threads=False)
            except Exception as err:  # noqa: BLE001
                return DatasetError(f"{f}: column '{c}' cannot be read; the file is corrupt ({err})")
    return DatasetError(f"dataset {ds.root}: reading {len(ds.files)} Parquet file(s) failed ({exc})")


@contextmanager
def read_errors(ds: ParquetDataset, columns: Sequence[str] | None = None) -> Iterator[None]:
    """Re-raise read failures of a scan over ``ds`` as a DatasetError naming the file and column."""
    try:
        yield
    except DatasetError:
        raise
    except Exception as exc:
        if not _is_read_error(exc):
            raise
        raise locate_read_error(ds, columns, exc) from exc
