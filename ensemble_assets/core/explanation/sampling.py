"""The seeded sample of an instance's out-of-fold rows, and reading those rows back.

Rows are read through the one data path (``data.streaming.iter_subset_batches``), several
instances' samples in one pass, each row identified by (gene, position, k-th row with both) and
checked against the label recorded at training time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ensemble_assets.core.data.contract import DatasetError, ParquetDataset
from ensemble_assets.core.data.streaming import iter_subset_batches

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def sample_oof_rows(n_rows: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded uniform sample (without replacement) of ``n`` of ``n_rows`` rows."""
    if n >= n_rows:
        return np.arange(n_rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=n, replace=False)).astype(np.int64)


def occurrence_in_group(*keys: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows (in order) have the same key values."""
    n = len(keys[0]) if keys else 0
    if not n:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(n), *reversed(keys)))
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for k in keys:
        sk = np.asarray(k)[order]
        new[1:] |= sk[1:] != sk[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    occ = np.empty(n, dtype=np.int64)
    occ[order] = np.arange(n) - start
    return occ


def _pair_key(gene_idx: np.ndarray, position: np.ndarray) -> np.ndarray:
    """(gene, position) packed in one int64 (gene index in the high 32 bits)."""
    pos = np.asarray(position, dtype=np.int64)
    if len(pos) and (pos.min() < -(2**31) or pos.max() >= 2**32):
        raise DatasetError(f"position values outside [-2^31, 2^32) cannot identify rows (e.g. {pos.max()})")
    return (np.asarray(gene_idx, dtype=np.int64) << 32) | (pos & 0xFFFFFFFF)


@dataclass
class SampleRequest:
    """Rows wanted for one instance, identified by (gene, position, k-th row with both): the
    positions of a gene are unique in MetaSpliceAI datasets, so k is 0 and a row's identity does
    not depend on the order rows are streamed in (which differs between gene sets: DuckDB does
    not keep the files' order when it filters). Without a position column, k is the row's rank
    within its gene, and the label check below is the only guard against a changed order."""

    key: str
    features: list[str]
    fill: dict[str, float]
    gene_id: np.ndarray        # (n,) object
    position: np.ndarray       # (n,) int64, as recorded in oof_predictions (-1: none)
    duplicate: np.ndarray      # (n,) int64: k-th row of the instance with this gene and position
    label: np.ndarray          # (n,) int8, as recorded in oof_predictions
    oof_row: np.ndarray        # (n,) int64 row index in oof_predictions.parquet


@dataclass
class ShapSample:
    key: str
    features: list[str]
    X: np.ndarray              # (n, F) float32 in the instance's feature order, imputed as in training
    label: np.ndarray
    gene_id: np.ndarray
    position: np.ndarray
    oof_row: np.ndarray


def request_from_oof(key: str, oof: pa.Table, features: Sequence[str], fill: Mapping[str, float],
                     n: int, seed: int) -> SampleRequest:
    """The seeded sample of an instance's out-of-fold rows (``oof_predictions.parquet``)."""
    genes = np.asarray(oof.column("gene_id").to_pylist(), dtype=object)
    _, gidx = np.unique(genes, return_inverse=True)
    pos = np.asarray(oof.column("position").to_numpy(), dtype=np.int64)
    dup = occurrence_in_group(gidx, pos)
    rows = sample_oof_rows(len(genes), n, seed)
    lab = np.asarray(oof.column("label").to_numpy(), dtype=np.int8)
    return SampleRequest(key, list(features), {f: float(fill[f]) for f in features}, genes[rows], pos[rows],
                         dup[rows], lab[rows], rows)


def load_samples(ds: ParquetDataset, requests: Sequence[SampleRequest], batch_rows: int = 8192,
                 log: Log = _quiet) -> list[ShapSample]:
    """Read the rows of several instances' samples in ONE pass over the data path.

    The union of the requested genes is streamed once with the union of the features (nulls
    kept as NaN); each request takes its rows, identified by (gene, position, k), and its own
    columns by name, imputed with its own fill values. A sampled row that is missing, or whose
    label differs from the one recorded at training time, means the dataset changed: error."""
    if not requests:
        return []
    genes = np.asarray(sorted(set().union(*[set(r.gene_id.tolist()) for r in requests])), dtype=object)
    union: list[str] = []
    seen: set[str] = set()
    for r in requests:
        for f in r.features:
            if f not in seen:
                seen.add(f)
                union.append(f)
    col_of = {f: j for j, f in enumerate(union)}
    nan_fill = {f: float("nan") for f in union}
    wanted: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for ri, r in enumerate(requests):
        pk = _pair_key(np.searchsorted(genes, r.gene_id), r.position)
        for slot, (a, k) in enumerate(zip(pk.tolist(), r.duplicate.tolist())):
            wanted.setdefault((a, k), []).append((ri, slot))
    wanted_pk = np.unique(np.asarray([a for a, _ in wanted], dtype=np.int64))
    cols = [np.asarray([col_of[f] for f in r.features], dtype=np.int64) for r in requests]
    X = [np.full((len(r.gene_id), len(r.features)), np.nan, dtype=np.float32) for r in requests]
    found = [np.zeros(len(r.gene_id), dtype=bool) for r in requests]
    label = [np.full(len(r.gene_id), -1, dtype=np.int8) for r in requests]
    seen_pk: dict[int, int] = {}
    n_read = 0
    for b in iter_subset_batches(ds, genes.tolist(), union, nan_fill, batch_rows):
        n_read += len(b.label)
        pk = _pair_key(np.searchsorted(genes, b.gene_id), b.position)
        take: list[tuple[list[int], list[int]]] = [([], []) for _ in requests]
        for i in np.flatnonzero(np.isin(pk, wanted_pk)).tolist():
            a = int(pk[i])
            k = seen_pk.get(a, 0)
            seen_pk[a] = k + 1
            for ri, slot in wanted.get((a, k), ()):
                take[ri][0].append(i)
                take[ri][1].append(slot)
        for ri, (rows, slots) in enumerate(take):
            if rows:
                X[ri][slots] = b.X[np.ix_(rows, cols[ri])]
                found[ri][slots] = True
                label[ri][slots] = b.label[rows]
    out = []
    for ri, r in enumerate(requests):
        if not found[ri].all():
            miss = np.flatnonzero(~found[ri])[:3]
            raise DatasetError(
                f"{ds.root}: {int((~found[ri]).sum())} sampled row(s) of instance {r.key} are no longer in the "
                f"dataset (e.g. {', '.join(f'gene {r.gene_id[i]} position {r.position[i]}' for i in miss)}): "
                "the dataset changed since the instance was trained; retrain it")
        bad = np.flatnonzero(label[ri] != r.label)
        if len(bad):
            i = bad[0]
            raise DatasetError(
                f"{ds.root}: {len(bad)} sampled row(s) of instance {r.key} have another label than when it was "
                f"trained (gene {r.gene_id[i]} position {r.position[i]}: label {label[ri][i]} now, {r.label[i]} "
                "then): the dataset changed since the instance was trained; retrain it")
        Xr = X[ri]
        nan = np.isnan(Xr)
        if nan.any():
            fillv = np.asarray([r.fill[f] for f in r.features], dtype=np.float32)
            Xr[nan] = np.broadcast_to(fillv, Xr.shape)[nan]
        out.append(ShapSample(r.key, r.features, Xr, label[ri], r.gene_id, r.position, r.oof_row))
    log(f"read {sum(len(r.gene_id) for r in requests)} sampled rows of {len(requests)} instance(s) in one pass "
        f"over {n_read} rows of {len(genes)} genes")
    return out
