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
    LOCAL_WINDOWS_NT,
    NEAREST_MIN_SCORES,
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


@dataclass(frozen=True)
class CandidateIndex:
    """The positions of each gene whose donor (acceptor) score reaches ``CANDIDATE_MIN_SCORE`` and
    those scores: what the gene-context features are measured from. Per track, the candidates of
    every gene sorted by (gene number in ``genes``, position), concatenated; gene ``i``'s are
    ``[offsets[i], offsets[i + 1])``. Built from complete genes only (every candidate position of
    a gene must be among the rows it is built from)."""

    genes: Mapping[str, int]
    offsets: Mapping[str, np.ndarray]     # track → (len(genes) + 1,) int64
    positions: Mapping[str, np.ndarray]   # track → float64, sorted within each gene
    scores: Mapping[str, np.ndarray]      # track → float64, the base score of that track

    @classmethod
    def from_table(cls, table: pa.Table | pa.RecordBatch, source: str = "input") -> "CandidateIndex":
        names, codes = gene_codes(table.column(GENE_COLUMN))
        pos = numeric_column(table, "position", source)
        offsets, positions, scores = {}, {}, {}
        for track in ("donor", "acceptor"):
            score = numeric_column(table, f"{track}_score", source)
            if np.isinf(score).any():   # as for a feature column: an error, not a huge candidate score
                raise DatasetError(f"{source}: column '{track}_score' has {int(np.isinf(score).sum())} infinite value(s)")
            score = np.nan_to_num(score, nan=-1.0)
            keep = (score >= CANDIDATE_MIN_SCORE) & np.isfinite(pos)
            g, p, sc = codes[keep], pos[keep], score[keep]
            order = np.lexsort((p, g))   # by gene, then position
            offsets[track] = np.concatenate([[0], np.cumsum(np.bincount(g, minlength=len(names)))]).astype(np.int64)
            positions[track], scores[track] = p[order], sc[order]
        return cls({g: i for i, g in enumerate(names)}, offsets, positions, scores)


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
    """``schema.GENE_CONTEXT_FEATURES`` of rows, per track (donor, acceptor) within the row's gene
    (transcript orientation), from the *other* candidates only (their positions and base scores):

    - per direction and minimum score (``schema.NEAREST_MIN_SCORES``): nucleotides to the nearest
      other candidate scoring at least that — the gene's length where there is none (NaN if that
      is missing or not positive) — and, for the 0.1 and 0.02 minimums, its base score (0 where
      there is none); for every candidate (0.02), nucleotides to the second-nearest one too;
    - per window ±W nt (``schema.LOCAL_WINDOWS_NT``): the highest base score among the other
      candidates within it (0 where there is none).

    NaN where ``position`` is missing."""
    pos = np.asarray(position, dtype=np.float64)
    none = np.asarray(gene_length, dtype=np.float64)
    none = np.where(none > 0, none, np.nan)
    known = np.isfinite(pos)
    out: dict[str, np.ndarray] = {}
    genes, inverse = gene_codes(gene_id)

    every_known = bool(known.all())

    def put(name: str, values: np.ndarray) -> None:
        out[name] = values if every_known else np.where(known, values, np.nan)

    queries = [(0.0, "left"), (0.0, "right"), *((s, side) for w in LOCAL_WINDOWS_NT for s, side in ((-w, "left"), (w, "right")))]
    # each row's gene as its number in the index; a gene the index lacks: an extra gene without candidates
    owner = np.fromiter((index.genes.get(g, len(index.genes)) for g in genes), dtype=np.int64, count=len(genes))[inverse]
    for track in ("donor", "acceptor"):
        cand, cand_score = index.positions[track], index.scores[track]
        counts = np.append(np.diff(index.offsets[track]), 0)
        found = _search(cand, counts, owner, pos, queries)
        first_ge, first_gt = found.at[0], found.at[1]
        last = max(len(cand) - 1, 0)
        table = _max_table(cand_score)

        def nearest(i: np.ndarray, sign: float, with_score: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
            """Distance to and (``with_score``) score of candidate ``i`` (none unless within the row's gene)."""
            if not len(cand):
                return none, np.zeros(len(pos))
            has = (i >= found.start) & (i < found.end)
            at = np.clip(i, 0, last)
            return (np.where(has, sign * (pos - cand[at]), none),
                    np.where(has, cand_score[at], 0.0) if with_score else None)

        every = np.arange(len(cand))
        for suffix, min_score in NEAREST_MIN_SCORES.items():
            up, down = first_ge - 1, first_gt          # the nearest candidates, up- and downstream
            if min_score > CANDIDATE_MIN_SCORE and len(cand):   # → the nearest scoring ≥ min_score
                strong = cand_score >= min_score
                before = np.maximum.accumulate(np.where(strong, every, -1))            # last strong ≤ i
                after = np.minimum.accumulate(np.where(strong, every, len(cand))[::-1])[::-1]   # first ≥ i
                up = np.where(up >= found.start, before[np.clip(up, 0, last)], -1)
                down = np.where(down < found.end, after[np.clip(down, 0, last)], found.end)
            for direction, i, sign in (("upstream", up, 1.0), ("downstream", down, -1.0)):
                name = f"nearest_{track}_{direction}{suffix}"
                scored = f"{name}_score" in GENE_CONTEXT_FEATURES   # the schema says which minimums carry a score
                distance, score = nearest(i, sign, with_score=scored)
                put(name, distance)
                if scored:
                    put(f"{name}_score", score)
        put(f"second_{track}_upstream_min02", nearest(first_ge - 2, 1.0, with_score=False)[0])
        put(f"second_{track}_downstream_min02", nearest(first_gt + 1, -1.0, with_score=False)[0])
        is_candidate = np.flatnonzero(first_gt > first_ge)   # the row's own score is not its competition
        for j, w in enumerate(LOCAL_WINDOWS_NT):
            lo, hi = found.at[2 + 2 * j], found.at[3 + 2 * j]
            best = _range_max(table, lo, hi)
            if len(is_candidate):
                r = is_candidate
                best[r] = np.maximum(_range_max(table, lo[r], first_ge[r]), _range_max(table, first_gt[r], hi[r]))
            put(f"{track}_max_within_{w}nt", best)
    return {f: out[f] for f in GENE_CONTEXT_FEATURES}


@dataclass(frozen=True)
class _Found:
    """``_search``'s answer: per query, per row, an index into the concatenated candidates; and
    each row's gene's candidates as the index range [start, end)."""

    at: list[np.ndarray]
    start: np.ndarray
    end: np.ndarray


def _search(cand: np.ndarray, counts: np.ndarray, inverse: np.ndarray, pos: np.ndarray,
            queries: Sequence[tuple[float, str]], by_gene: bool = False) -> _Found:
    """For every row and query ``(shift, side)``: ``np.searchsorted(its gene's sorted candidates,
    pos + shift, side)``, as an index into ``cand`` (every gene's candidates, sorted, concatenated
    in gene order; ``counts`` per gene), clipped to the gene's range. Whole-number positions below
    2**40 (positions are int64 in the data contract): all genes in one sorted search on the key
    (gene, position); otherwise (or with ``by_gene``) gene by gene."""
    first = np.cumsum(counts) - counts
    start, end = first[inverse], (first + counts)[inverse]
    shifts = np.asarray([q[0] for q in queries], dtype=np.float64)
    finite = pos[np.isfinite(pos)]
    values = np.concatenate([finite + shifts.min(initial=0.0), finite + shifts.max(initial=0.0), cand])
    whole = not len(values) or (np.abs(values).max() < 2.0**40 and (values == np.floor(values)).all())
    lo = values.min() if len(values) else 0.0
    span = (values.max() - lo + 2) if len(values) else 2.0
    if whole and span * max(len(counts), 1) < 2.0**52 and not by_gene:
        # integer keys (exact: below 2**52): searched faster than floats
        owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        span_i = int(span)
        keys = owner * span_i + (cand - lo).astype(np.int64)    # sorted: genes in order, candidates sorted
        base = inverse * span_i + (np.nan_to_num(pos, nan=lo) - lo).astype(np.int64)
        at = [np.clip(np.searchsorted(keys, base + int(shift), side), start, end) for shift, side in queries]
        return _Found(at, start, end)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(counts)))[:-1]
    at = [np.zeros(len(pos), dtype=np.int64) for _ in queries]
    for g, rows in enumerate(np.split(order, bounds)):
        c, p = cand[first[g]:first[g] + counts[g]], np.nan_to_num(pos[rows])
        for a, (shift, side) in zip(at, queries):
            a[rows] = first[g] + np.searchsorted(c, p + shift, side)
    return _Found(at, start, end)


def _max_table(values: np.ndarray) -> np.ndarray:
    """The sparse table of ``values`` (≥ 0) for ``_range_max``: row k holds
    ``max(values[i : i + 2**k])`` (0-padded at the end)."""
    levels = int(np.log2(len(values))) + 1 if len(values) else 0
    table = np.zeros((levels, len(values)))
    if levels:
        table[0] = values
    for k in range(1, levels):
        w = 2 ** (k - 1)
        table[k, :len(values) - w] = np.maximum(table[k - 1, :len(values) - w], table[k - 1, w:])
    return table


def _range_max(table: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``max(values[lo:hi])`` per row from their ``_max_table``, 0 where the range is empty: two
    lookups per row."""
    n = table.shape[1]
    length = hi - lo
    ok = length > 0
    if not n or not ok.any():
        return np.zeros(len(lo))
    k = np.log2(np.maximum(length, 1)).astype(np.int64)
    first, second = np.minimum(lo, n - 1), np.clip(hi - (1 << k), 0, n - 1)
    return np.where(ok, np.maximum(table[k, first], table[k, second]), 0.0)


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
