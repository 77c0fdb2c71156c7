"""Column features computed on the one row path: a batch of rows → the model's float32 matrix
(imputation, the gene-position and gene-context features)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ensemble_assets.core.data.contract import DatasetError
from ensemble_assets.core.data.schema import (
    CANDIDATE_MIN_SCORE,
    GENE_COLUMN,
    GENE_CONTEXT_FEATURES,
    GENE_CONTEXT_SOURCES,
    GENE_POSITION_FEATURES,
    GENE_POSITION_SOURCES,
)


def numeric_column(table: pa.Table | pa.RecordBatch, name: str, source: str) -> np.ndarray:
    """One numeric column as float64 (null → NaN); a non-numeric column is an error naming it."""
    col = table.column(name)
    if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type):
        col = pc.cast(col, pa.float64())
    if not (pa.types.is_floating(col.type) or pa.types.is_null(col.type)):
        raise DatasetError(f"{source}: column '{name}' is {col.type}, expected a number")
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def gene_position_features(position: np.ndarray, gene_length: np.ndarray) -> dict[str, np.ndarray]:
    """``schema.GENE_POSITION_FEATURES`` of rows: nucleotides from the gene's 5' end and to its
    3' end, and the fraction of the gene before the position (transcript orientation; NaN where
    ``position`` or a positive ``gene_length`` is missing)."""
    pos = np.asarray(position, dtype=np.float64)
    length = np.asarray(gene_length, dtype=np.float64)
    length = np.where(length > 0, length, np.nan)
    return {"gene_offset_5p": pos, "gene_offset_3p": length - 1 - pos, "gene_relative_position": pos / length}


_EMPTY = np.empty(0, dtype=np.float64)


@dataclass(frozen=True)
class CandidateIndex:
    """Per gene, the sorted positions whose donor (acceptor) score reaches ``CANDIDATE_MIN_SCORE``
    and those scores, in the same order: what the gene-context features are measured from. Built
    from complete genes only (every candidate position of a gene must be among the rows it is
    built from)."""

    donor: Mapping[str, np.ndarray]
    acceptor: Mapping[str, np.ndarray]
    donor_score: Mapping[str, np.ndarray]
    acceptor_score: Mapping[str, np.ndarray]

    @classmethod
    def from_table(cls, table: pa.Table | pa.RecordBatch, source: str = "input") -> "CandidateIndex":
        names, codes = gene_codes(table.column(GENE_COLUMN))
        pos = numeric_column(table, "position", source)
        tracks = {}
        for track in ("donor", "acceptor"):
            score = np.nan_to_num(numeric_column(table, f"{track}_score", source), nan=-1.0)
            keep = (score >= CANDIDATE_MIN_SCORE) & np.isfinite(pos)
            g, p, sc = codes[keep], pos[keep], score[keep]
            order = np.lexsort((p, g))   # by gene, then position
            present, starts = np.unique(g[order], return_index=True)
            genes = [names[i] for i in present]
            tracks[track] = dict(zip(genes, np.split(p[order], starts[1:])))
            tracks[f"{track}_score"] = dict(zip(genes, np.split(sc[order], starts[1:])))
        return cls(**tracks)


def gene_codes(gene_id: np.ndarray | pa.Array | pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """The distinct gene ids (as strings, first-seen order) and each row's index into them: Arrow's
    dictionary encoding, not a sort of Python strings."""
    arr = gene_id if isinstance(gene_id, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(gene_id, dtype=object))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    enc = pc.dictionary_encode(arr, null_encoding="encode")
    return [str(g) for g in enc.dictionary.to_pylist()], enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def gene_context_features(index: CandidateIndex, gene_id: np.ndarray | pa.Array | pa.ChunkedArray, position: np.ndarray,
                          gene_length: np.ndarray) -> dict[str, np.ndarray]:
    """``schema.GENE_CONTEXT_FEATURES`` of rows, per track (donor, acceptor) and direction within
    the row's gene (transcript orientation): nucleotides to the nearest other candidate — the
    gene's length where there is none (NaN if that is missing or not positive) — and that
    candidate's base score (0 where there is none). NaN where ``position`` is missing. Only the
    candidate positions and their scores are read."""
    pos = np.asarray(position, dtype=np.float64)
    none = np.asarray(gene_length, dtype=np.float64)
    none = np.where(none > 0, none, np.nan)
    known = np.isfinite(pos)
    out = {f: np.full(len(pos), np.nan) for f in GENE_CONTEXT_FEATURES}
    genes, inverse = gene_codes(gene_id)
    for track in ("donor", "acceptor"):
        per_gene = [getattr(index, track).get(g, _EMPTY) for g in genes]
        scores = [getattr(index, f"{track}_score").get(g, _EMPTY) for g in genes]
        found = _nearest(per_gene, inverse, pos)
        if found is None:   # positions that are not whole numbers: gene by gene
            found = _nearest_by_gene(per_gene, inverse, pos)
        i_up, i_down, cand = found
        cand_score = np.concatenate(scores) if len(cand) else _EMPTY
        for direction, i, sign in (("upstream", i_up, 1.0), ("downstream", i_down, -1.0)):
            has = i >= 0
            at = np.maximum(i, 0)
            distance = np.where(has, sign * (pos - cand[at]) if len(cand) else 0.0, none)
            score = np.where(has, cand_score[at] if len(cand) else 0.0, 0.0)
            out[f"nearest_{track}_{direction}"] = np.where(known, distance, np.nan)
            out[f"nearest_{track}_{direction}_score"] = np.where(known, score, np.nan)
    return out


def _nearest(per_gene: list[np.ndarray], inverse: np.ndarray,
             pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """For every row, the index (into the concatenated candidates) of its gene's last candidate
    before ``pos`` and first candidate after it (-1: none), all genes in one sorted search on the
    key (gene, position). Exact for whole-number positions below 2**40 (positions are int64 in
    the data contract); None otherwise."""
    counts = np.fromiter((len(c) for c in per_gene), dtype=np.int64, count=len(per_gene))
    cand = np.concatenate(per_gene) if counts.sum() else _EMPTY
    finite = pos[np.isfinite(pos)]
    values = np.concatenate([finite, cand])
    if len(values) and (np.abs(values).max() >= 2.0**40 or (values != np.floor(values)).any()):
        return None
    lo = values.min() if len(values) else 0.0
    span = (values.max() - lo + 2) if len(values) else 2.0
    if span * max(len(per_gene), 1) >= 2.0**52:
        return None
    owner = np.repeat(np.arange(len(per_gene), dtype=np.float64), counts)
    keys = owner * span + (cand - lo)                        # sorted: genes in order, candidates sorted
    rows = inverse * span + (np.nan_to_num(pos, nan=lo) - lo)
    first_ge = np.searchsorted(keys, rows, "left")           # keys[first_ge - 1] < row
    first_gt = np.searchsorted(keys, rows, "right")          # keys[first_gt] > row
    start = np.cumsum(counts) - counts
    end = start + counts
    i_up = np.where(first_ge > start[inverse], first_ge - 1, -1)
    i_down = np.where(first_gt < end[inverse], first_gt, -1)
    return i_up, i_down, cand


def _nearest_by_gene(per_gene: list[np.ndarray], inverse: np.ndarray,
                     pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_nearest``, one gene at a time (any positions)."""
    counts = np.asarray([len(c) for c in per_gene], dtype=np.int64)
    start = np.cumsum(counts) - counts
    cand = np.concatenate(per_gene) if counts.sum() else _EMPTY
    i_up = np.full(len(pos), -1, dtype=np.int64)
    i_down = np.full(len(pos), -1, dtype=np.int64)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(per_gene)))[:-1]
    for g, rows in enumerate(np.split(order, bounds)):
        c, p = per_gene[g], pos[rows]
        i = np.searchsorted(c, p, "left")
        j = np.searchsorted(c, p, "right")
        i_up[rows] = np.where(i > 0, start[g] + i - 1, -1)
        i_down[rows] = np.where(j < len(c), start[g] + j, -1)
    return i_up, i_down, cand


_COMPUTED = ((GENE_POSITION_FEATURES, GENE_POSITION_SOURCES), (GENE_CONTEXT_FEATURES, GENE_CONTEXT_SOURCES))


def source_columns(features: Sequence[str]) -> list[str]:
    """The dataset columns that ``features`` are read or computed from."""
    out = [f for f in features if f not in GENE_POSITION_FEATURES and f not in GENE_CONTEXT_FEATURES]
    for computed, sources in _COMPUTED:
        if any(f in computed for f in features):
            out += [c for c in sources if c not in out]
    return out


def to_feature_matrix(table: pa.Table | pa.RecordBatch, features: Sequence[str],
                      fill: Mapping[str, float], source: str = "input",
                      candidates: CandidateIndex | None = None) -> np.ndarray:
    """Arrow columns → float32 matrix, by name. Null and NaN take the column's fill value;
    a column absent from ``table`` is all fill (k-mers: 0). Infinite values are an error.
    ``schema.GENE_POSITION_FEATURES`` are computed from ``position`` and ``gene_length``,
    ``schema.GENE_CONTEXT_FEATURES`` from ``candidates`` (default: the candidates among the
    table's own rows, so the table must then hold its genes whole)."""
    n = table.num_rows
    X = np.empty((n, len(features)), dtype=np.float32, order="F")   # filled column by column
    names = set(table.schema.names)
    computed: dict[str, np.ndarray] = {}
    wanted = {f for f in features if f not in names}
    position_wanted = wanted & set(GENE_POSITION_FEATURES) and set(GENE_POSITION_SOURCES) <= names
    context_wanted = wanted & set(GENE_CONTEXT_FEATURES) and set(GENE_CONTEXT_SOURCES) <= names
    if position_wanted or context_wanted:   # both families read position and gene_length: once
        position, gene_length = (numeric_column(table, c, source) for c in GENE_POSITION_SOURCES)
    if position_wanted:
        computed.update(gene_position_features(position, gene_length))
    if context_wanted:
        computed.update(gene_context_features(
            candidates if candidates is not None else CandidateIndex.from_table(table, source),
            table.column(GENE_COLUMN), position, gene_length))
    for j, name in enumerate(features):
        if name in names:
            v = numeric_column(table, name, source)
        elif name in computed:
            v = computed[name]
        else:
            X[:, j] = fill[name]
            continue
        bad = ~np.isfinite(v)
        if bad.any():
            if np.isinf(v).any():
                raise DatasetError(
                    f"{source}: column '{name}' has {int(np.isinf(v).sum())} infinite value(s)"
                )
            v = np.where(bad, fill[name], v)
        X[:, j] = v
    return np.ascontiguousarray(X)   # row-major, as XGBoost and the callers take it
