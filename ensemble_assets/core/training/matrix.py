"""The instance's training matrix: a subset's rows streamed from Parquet into one
``QuantileDMatrix`` (see ``loop.py`` for how it serves every fold and class)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ensemble_assets.core.data.contract import DatasetError, ParquetDataset
from ensemble_assets.core.data.streaming import RowBatch, iter_subset_batches
from ensemble_assets.core.training.settings import TrainingSettings


@dataclass
class SubsetData:
    """The instance's quantized matrix and the per-row side arrays gathered on its first pass."""

    dmatrix: Any
    label: np.ndarray
    gene_idx: np.ndarray
    position: np.ndarray
    base: np.ndarray
    genes: np.ndarray    # sorted gene ids; gene_idx indexes this
    parquet_passes: int = 1  # passes that read Parquet (the others replayed the pass cache)


class _PassCache:
    """The float32 batches of one complete pass, in an anonymous temporary file (deleted on close)."""

    def __init__(self, directory: str | None = None):
        self._f = tempfile.TemporaryFile(dir=directory, prefix="ensemble-pass-")
        self.shapes: list[tuple[int, int]] = []
        self.complete = False
        self._read = 0

    def append(self, X: np.ndarray) -> None:
        self._f.write(memoryview(np.ascontiguousarray(X, dtype=np.float32)).cast("B"))
        self.shapes.append(X.shape)

    def discard(self) -> None:
        self._f.seek(0)
        self._f.truncate()
        self.shapes, self.complete = [], False

    def rewind(self) -> None:
        self._f.seek(0)
        self._read = 0

    def next(self) -> np.ndarray | None:
        if self._read >= len(self.shapes):
            return None
        X = np.empty(self.shapes[self._read], dtype=np.float32)
        if self._f.readinto(memoryview(X).cast("B")) != X.nbytes:
            raise RuntimeError("the pass cache file is truncated")
        self._read += 1
        return X

    def close(self) -> None:
        self._f.close()


class _BatchIter:
    """``xgboost.DataIter`` over ``iter_subset_batches``; collects side arrays on pass one and,
    with a ``_PassCache``, replays the later passes from it instead of re-reading Parquet."""

    def __new__(cls, *a, **kw):  # subclass lazily so importing this module needs no xgboost
        import xgboost as xgb

        class Impl(xgb.DataIter):
            def __init__(self, make: Callable[[], Iterator[RowBatch]], genes: np.ndarray, names: list[str],
                         cache: _PassCache | None = None):
                self._make, self._genes, self._it, self._names = make, genes, None, names
                self.first_pass, self._n = True, 0
                self.cache, self._exhausted = cache, False
                self.parquet_passes = 0
                self.parts: dict[str, list[np.ndarray]] = {"label": [], "gene_idx": [], "position": [], "base": []}
                super().__init__(release_data=True)

            def next(self, input_data: Callable) -> bool:
                if self.cache is not None and self.cache.complete:
                    X = self.cache.next()
                    if X is None:
                        return False
                    input_data(data=X, feature_names=self._names)
                    return True
                if self._it is None:
                    self._it = self._make()
                    self.parquet_passes += 1
                b = next(self._it, None)
                if b is None:
                    self._exhausted = True
                    return False
                idx = np.searchsorted(self._genes, b.gene_id).astype(np.int32)
                if self.first_pass:
                    self.parts["label"].append(b.label)
                    self.parts["gene_idx"].append(idx)
                    self.parts["position"].append(b.position)
                    self.parts["base"].append(b.base)
                elif not (self._n < len(self.parts["gene_idx"])
                          and np.array_equal(idx, self.parts["gene_idx"][self._n])
                          and np.array_equal(b.position, self.parts["position"][self._n])):
                    # rows must arrive in the same order on every pass, or labels would misalign
                    raise RuntimeError(f"row order changed between passes over the data (batch {self._n})")
                self._n += 1
                if self.cache is not None:
                    self.cache.append(b.X)
                input_data(data=b.X, feature_names=self._names)
                return True

            def reset(self) -> None:
                if self._it is not None:
                    self.first_pass = False
                    if self.cache is not None:
                        if self._exhausted:
                            self.cache.complete = True
                        else:  # a pass that stopped early: the cache holds part of the rows
                            self.cache.discard()
                if self.cache is not None:
                    self.cache.rewind()
                self._it, self._n, self._exhausted = None, 0, False

        return Impl(*a, **kw)


def gather_rows(parts: Mapping[str, list[np.ndarray]], gene_arr: np.ndarray, ds: ParquetDataset) -> dict[str, np.ndarray]:
    """Concatenate the per-batch side arrays of a subset; every gene must have rows."""
    if not parts["label"]:
        raise DatasetError(f"no rows in {ds.root} for the {len(gene_arr)} genes of this subset")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    missing = np.setdiff1d(np.arange(len(gene_arr)), np.unique(cat["gene_idx"]))
    if len(missing):
        raise DatasetError(f"{len(missing)} gene(s) of the subset have no rows in {ds.root}, e.g. "
                           f"{', '.join(map(str, gene_arr[missing[:5]]))}")
    return cat


def load_subset(ds: ParquetDataset, genes: Sequence[str], features: Sequence[str], fill: Mapping[str, float],
                settings: TrainingSettings, ref: Any = None) -> SubsetData:
    import xgboost as xgb

    gene_arr = np.asarray(sorted(set(genes)), dtype=object)
    cache = _PassCache() if settings.pass_cache else None
    it = _BatchIter(lambda: iter_subset_batches(ds, gene_arr.tolist(), features, fill, settings.batch_rows),
                    gene_arr, list(features), cache)
    try:
        dm = xgb.QuantileDMatrix(it, max_bin=settings.max_bin, nthread=settings.nthread or None, ref=ref)
    finally:
        if cache is not None:
            cache.close()
    cat = gather_rows(it.parts, gene_arr, ds)
    return SubsetData(dm, cat["label"], cat["gene_idx"], cat["position"], cat["base"], gene_arr, it.parquet_passes)
