"""Demo dataset generator: a synthetic but plausible splice-site training set.

The output follows the MetaSpliceAI layout of docs/architecture.md#data-contract and of the real atha_chr1 dataset
(``<out>/master/batch_00001.parquet`` ... zstd, plus ``master/gene_manifest.csv``): the same
column names, Arrow types and semantics, one row per selected position of a gene.

What is simulated, per gene (all in transcript orientation, position 0 = the gene's 5' end):

* **structure** – exon/intron chains (about 18% single-exon genes), sometimes 2-4 transcripts
  (exon skipping, alternative 5'/3' splice sites, alternative first/last exon);
* **sequence** – exons GC-rich and purine-rich (with GAAGAA-like enhancers), introns AT/T-rich;
  donors ``MAG|GTRAGT`` and acceptors ``branch point ... polypyrimidine tract ... YAG|G`` planted
  with a per-site consensus strength, plus *decoy* donors/acceptors in introns (and a few in
  exons), many with a perfect consensus;
* **base model** – an imperfect SpliceAI-like predictor: a motif score (over-weighting a perfect
  ``+3..+6`` donor consensus or a strong polypyrimidine tract) plus a noisy "knows it is a real
  site" term. It under-scores true sites with a weak consensus (false negatives) and fires on
  strong decoys (false positives); it ignores exon/intron composition and branch points, so a
  meta-model on k-mers + scores can correct part of its mistakes on held-out genes.

Rows per gene follow MetaSpliceAI's sampling: every annotated site, every hard negative (a
non-site position with ``max(donor, acceptor) >= 0.02``), up to 2 near-site negatives within
±50 nt of each site, and random positions to reach the gene's row target; each position once.
``<out>/dataset.json`` declares this row selection (``declaration``), as atha_chr1's does.

Generation is deterministic by ``DemoSpec.seed`` (each gene draws from its own seeded streams, so
the same spec gives byte-identical files) and streams one output file at a time: peak memory is
set by ``genes_per_file × rows_per_gene × columns``, not by ``n_genes``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ensemble_assets.core.data import schema

__all__ = [
    "DemoSpec",
    "declaration",
    "write_demo_dataset",
    "demo_gene_id",
    "demo_window",
    "demo_column_names",
    "kmer_columns",
    "derive_score_features",
    "WINDOW_LENGTH",
]

# --------------------------------------------------------------------------- constants

WINDOW_LENGTH = 501                      # sequence window centred on the position
HALF_WINDOW = WINDOW_LENGTH // 2         # 250
FLANK = HALF_WINDOW + 40                 # sequence simulated beyond each gene end
EPS = 1e-10                              # the epsilon of every derived ratio / log-odds
LOCAL_PEAK_MIN_SCORE = 1e-3              # *_is_local_peak needs the score above this
PRED_THRESHOLD = 0.5                     # base outcome threshold (pred_type)
SITE_TOLERANCE = 2                       # a site is TP when its type reaches 0.5 within ±2 nt
HARD_NEGATIVE_MIN_SCORE = 0.02           # hard negatives: max(donor, acceptor) >= 0.02
NEAR_SITE_RADIUS = 50                    # near-site negatives within ±50 nt of a site
NEAR_SITE_PER_SITE = 2
MIN_RANDOM_NEGATIVES = 5
BACKFILL_DISTANCE_MARGIN = 500           # back-filled distance_to_* = max over site rows + 500
BASES = "ACGT"                           # base-4 code: A=0 C=1 G=2 T=3 (k-mer order = lexicographic)
A, C, G, T = 0, 1, 2, 3

PARQUET_COMPRESSION = "zstd"
MANIFEST_NAME = "gene_manifest.csv"
MASTER_DIR = "master"
DECLARATION_NAME = "dataset.json"        # beside master/ (core/data/declaration.py reads it)
MANIFEST_COLUMNS: tuple[str, ...] = (
    "global_index", "gene_id", "gene_name", "gene_type", "chrom", "strand", "gene_length",
    "start", "end", "total_splice_sites", "donor_sites", "acceptor_sites",
    "splice_density_per_kb", "file_index", "file_name",
)

# random streams of one gene (SeedSequence([seed, gene_index, stream]))
_STREAM_STRUCTURE, _STREAM_SEQUENCE, _STREAM_SCORES, _STREAM_SAMPLING = 0, 1, 2, 3
_STREAM_LAYOUT = 99                      # used with gene_index 0 for the chromosome layout

# base composition (A, C, G, T) by region: 0 flank / intergenic, 1 exon, 2 intron
_COMPOSITION = np.array([
    [0.33, 0.17, 0.17, 0.33],
    [0.29, 0.21, 0.27, 0.23],
    [0.31, 0.15, 0.15, 0.39],
])
_COMPOSITION_CUM = np.cumsum(_COMPOSITION, axis=1)[:, :3]

_NEITHER, _DONOR, _ACCEPTOR = (schema.LABEL_CODES[c] for c in ("neither", "donor", "acceptor"))
_PRED_TYPES = ("TN", "TP", "FN", "FP")
_TN, _TP, _FN, _FP = range(4)


@dataclass(frozen=True)
class DemoSpec:
    """Shape of a demo dataset. The defaults give a small, fast dataset (240 genes, ~15k rows);
    ``DemoSpec(n_genes=9280, rows_per_gene=400)`` is the reference benchmark shape."""

    n_genes: int = 240
    seed: int = 7
    kmer_sizes: tuple[int, ...] = (3, 5)
    genes_per_file: int = 60
    rows_per_gene: int = 60          # target mean rows per gene (negatives sampled to reach it)
    chrom_count: int = 3             # genes spread over chr1..chrN (N = min(chrom_count, n_genes))

    def __post_init__(self) -> None:
        if self.n_genes < 1:
            raise ValueError(f"DemoSpec.n_genes must be >= 1, got {self.n_genes}")
        if self.genes_per_file < 1:
            raise ValueError(f"DemoSpec.genes_per_file must be >= 1, got {self.genes_per_file}")
        if self.rows_per_gene < 1:
            raise ValueError(f"DemoSpec.rows_per_gene must be >= 1, got {self.rows_per_gene}")
        if self.chrom_count < 1:
            raise ValueError(f"DemoSpec.chrom_count must be >= 1, got {self.chrom_count}")
        if self.seed < 0:
            raise ValueError(f"DemoSpec.seed must be >= 0, got {self.seed}")
        ks = tuple(self.kmer_sizes)
        if len(set(ks)) != len(ks) or any(not isinstance(k, int) or not 1 <= k <= 8 for k in ks):
            raise ValueError(f"DemoSpec.kmer_sizes must be distinct integers in 1..8, got {ks}")
        object.__setattr__(self, "kmer_sizes", tuple(sorted(ks)))

    @property
    def n_files(self) -> int:
        return -(-self.n_genes // self.genes_per_file)


def demo_gene_id(index: int) -> str:
    """Gene id of the gene with 0-based global index ``index`` (``DEMO000001`` for 0)."""
    return f"DEMO{index + 1:06d}"


def _gene_index(gene_id: str) -> int:
    if not (gene_id.startswith("DEMO") and gene_id[4:].isdigit()):
        raise ValueError(f"not a demo gene id: {gene_id!r}")
    return int(gene_id[4:]) - 1


def kmer_columns(k: int) -> list[str]:
    """``{k}mer_{SEQ}`` column names for every ACGT k-mer, in lexicographic (= base-4 code) order."""
    codes = np.arange(4**k)
    digits = [(codes // 4 ** (k - 1 - i)) % 4 for i in range(k)]
    return [f"{k}mer_" + "".join(BASES[d[c]] for d in digits) for c in codes]


def demo_column_names(kmer_sizes: tuple[int, ...] = DemoSpec.kmer_sizes) -> list[str]:
    """The columns of a demo file, in file order."""
    return [f.name for f in _arrow_schema(tuple(sorted(kmer_sizes)))]


# --------------------------------------------------------------------------- derived features


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # num / (den + eps), with the eps taking den's sign so a tiny negative den never explodes
    return num / (den + np.where(den < 0, -EPS, EPS))


def derive_score_features(
    donor: np.ndarray,
    acceptor: np.ndarray,
    neither: np.ndarray,
    donor_track: np.ndarray,
    acceptor_track: np.ndarray,
    context: np.ndarray,
) -> dict[str, np.ndarray]:
    """The ``schema.DERIVED_COLUMNS`` of rows, from their base scores and score tracks.

    ``donor_track``/``acceptor_track``: (n, 5) arrays, each type's own score at -2, -1, 0, +1, +2;
    ``context``: (n, 4) the row's context scores (m2, m1, p1, p2). The formulas reproduce the
    atha_chr1 columns (checked against that dataset to float precision); eps = 1e-10.
    """
    d, a, n = (np.asarray(x, dtype=np.float64) for x in (donor, acceptor, neither))
    ctx = np.asarray(context, dtype=np.float64)
    total = d + a + n
    splice = d + a
    out: dict[str, np.ndarray] = {}
    # donor share of the splice mass: d / (d + a + eps)
    out["relative_donor_probability"] = d / (splice + EPS)
    # splice mass, normalised: (d + a) / (d + a + n + eps)
    out["splice_probability"] = splice / (total + EPS)
    # (d - a) / (max(d, a) + eps)
    out["donor_acceptor_diff"] = (d - a) / (np.maximum(d, a) + EPS)
    # (max(d, a) - n) / (max(d, a, n) + eps)
    top = np.maximum(d, a)
    out["splice_neither_diff"] = (top - n) / (np.maximum(top, n) + EPS)
    # log((d + eps) / (a + eps))
    out["donor_acceptor_logodds"] = np.log((d + EPS) / (a + EPS))
    # log((d + a + eps) / (n + eps))
    out["splice_neither_logodds"] = np.log((splice + EPS) / (n + EPS))
    # Shannon entropy (nats) of (d, a, n): -sum p log p
    p = np.stack([d, a, n], axis=1)
    out["probability_entropy"] = -np.sum(p * np.log(np.maximum(p, EPS)), axis=1)
    # row context (m2, m1, p1, p2): mean, upstream minus downstream mass, max
    out["context_neighbor_mean"] = ctx.mean(axis=1)
    out["context_asymmetry"] = (ctx[:, 0] + ctx[:, 1]) - (ctx[:, 2] + ctx[:, 3])
    out["context_max"] = ctx.max(axis=1)
    strength: dict[str, np.ndarray] = {}
    peak: dict[str, np.ndarray] = {}
    for name, track in (("donor", donor_track), ("acceptor", acceptor_track)):
        tr = np.asarray(track, dtype=np.float64)
        m2, m1, s, p1, p2 = (tr[:, i] for i in range(5))
        neigh_mean = (m2 + m1 + p1 + p2) / 4.0
        neigh_max = np.maximum(np.maximum(m2, m1), np.maximum(p1, p2))
        out[f"{name}_diff_m1"] = s - m1                         # s - s(-1)
        out[f"{name}_diff_m2"] = s - m2                         # s - s(-2)
        out[f"{name}_diff_p1"] = s - p1                         # s - s(+1)
        out[f"{name}_diff_p2"] = s - p2                         # s - s(+2)
        out[f"{name}_surge_ratio"] = s / (m1 + p1 + EPS)        # s / (s(-1) + s(+1) + eps)
        # above both ±1 neighbours and above 0.001
        out[f"{name}_is_local_peak"] = ((s > m1) & (s > p1) & (s > LOCAL_PEAK_MIN_SCORE)).astype(np.int64)
        # 0.1 s(-2) + 0.2 s(-1) + 0.4 s + 0.2 s(+1) + 0.1 s(+2)
        out[f"{name}_weighted_context"] = 0.4 * s + 0.2 * (m1 + p1) + 0.1 * (m2 + p2)
        peak[name] = s / (neigh_mean + EPS)                     # s / (mean of ±1, ±2 + eps)
        out[f"{name}_peak_height_ratio"] = peak[name]
        out[f"{name}_second_derivative"] = 2.0 * s - m1 - p1    # discrete -d2s/dx2 at the peak
        strength[name] = s - neigh_mean                         # s - mean of ±1, ±2
        out[f"{name}_signal_strength"] = strength[name]
        out[f"{name}_context_diff_ratio"] = s / (neigh_max + EPS)  # s / (max of ±1, ±2 + eps)
    # cross-type: peak-height ratio, signal difference, (d - a)/(d + a), signal ratio
    out["donor_acceptor_peak_ratio"] = peak["donor"] / (peak["acceptor"] + EPS)
    out["type_signal_difference"] = strength["donor"] - strength["acceptor"]
    out["score_difference_ratio"] = (d - a) / (splice + EPS)
    out["signal_strength_ratio"] = _safe_div(strength["donor"], strength["acceptor"])
    missing = set(schema.DERIVED_COLUMNS) ^ set(out)
    assert not missing, missing
    return {name: out[name] for name in schema.DERIVED_COLUMNS}


# --------------------------------------------------------------------------- arrow schema

_STRING = frozenset(schema.STRING_COLUMNS)
_INT64 = frozenset(schema.INT64_COLUMNS)
_NULLABLE = frozenset(schema.NULLABLE_COLUMNS)


def _arrow_type(name: str) -> pa.DataType:
    if name in _STRING:
        return pa.string()
    if name in _INT64:
        return pa.int64()
    return pa.float64()


def _arrow_schema(kmer_sizes: tuple[int, ...]) -> pa.Schema:
    names: list[str] = list(schema.ID_COLUMNS)
    names += [c for c in schema.LEAKAGE_COLUMNS if c not in ("sequence", "score")]
    names += [*schema.BASE_SCORE_COLUMNS, "score", *schema.CONTEXT_COLUMNS]
    names += [*schema.DERIVED_COLUMNS, *schema.SEQUENCE_COLUMNS]
    for k in kmer_sizes:
        names += kmer_columns(k)
    names += list(schema.GENE_STRUCTURE_COLUMNS)
    return pa.schema([pa.field(n, _arrow_type(n), nullable=n in _NULLABLE) for n in names])


# --------------------------------------------------------------------------- gene structure


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index, stream])))


@dataclass(frozen=True)
class _Transcript:
    transcript_id: str
    exons: np.ndarray                    # (m, 2) int64 [start, end] inclusive, ascending

    @property
    def start(self) -> int:
        return int(self.exons[0, 0])

    @property
    def end(self) -> int:
        return int(self.exons[-1, 1])

    def features(self) -> tuple[float, ...]:
        """tx_start, tx_end (relative), transcript_length, num_exons, avg/median/total exon
        length, total intron length."""
        lengths = (self.exons[:, 1] - self.exons[:, 0] + 1).astype(np.float64)
        total = float(lengths.sum())
        return (
            float(self.start), float(self.end), total, float(len(lengths)),
            float(lengths.mean()), float(np.median(lengths)), total,
            float(self.end - self.start + 1) - total,
        )


@dataclass(frozen=True)
class _GeneStructure:
    index: int
    length: int
    strand: str
    transcripts: tuple[_Transcript, ...]
    site_pos: np.ndarray                 # sorted distinct site positions
    site_type: np.ndarray                # 1 donor, 2 acceptor
    site_tx: np.ndarray                  # index of the first transcript (by id) with the site


def _lognormal_int(rng: np.random.Generator, median: float, sigma: float, size: int,
                   lo: int, hi: int) -> np.ndarray:
    return np.clip(np.rint(rng.lognormal(math.log(median), sigma, size)), lo, hi).astype(np.int64)


def _exon_chain(exon_lengths: np.ndarray, intron_lengths: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(exon_lengths), dtype=np.int64)
    if len(exon_lengths) > 1:
        starts[1:] = np.cumsum(exon_lengths[:-1] + intron_lengths)
    return np.stack([starts, starts + exon_lengths - 1], axis=1)


def _sites_of(exons: np.ndarray) -> list[tuple[int, int]]:
    # donor: last base of each upstream exon; acceptor: first base of each downstream exon
    return [(int(e), _DONOR) for e in exons[:-1, 1]] + [(int(s), _ACCEPTOR) for s in exons[1:, 0]]


def _gene_structure(seed: int, index: int) -> _GeneStructure:
    rng = _rng(seed, index, _STREAM_STRUCTURE)
    strand = "+" if rng.random() < 0.5 else "-"
    n_exons = 1 if rng.random() < 0.18 else int(min(1 + rng.geometric(0.13), 24))
    if n_exons == 1:
        exon_lengths = _lognormal_int(rng, 1100, 0.6, 1, 250, 6000)
        intron_lengths = np.zeros(0, dtype=np.int64)
    else:
        exon_lengths = _lognormal_int(rng, 140, 0.45, n_exons, 50, 600)
        exon_lengths[[0, -1]] = _lognormal_int(rng, 230, 0.5, 2, 70, 2000)
        intron_lengths = _lognormal_int(rng, 380, 0.8, n_exons - 1, 90, 4000)
    canonical = _exon_chain(exon_lengths, intron_lengths)
    length = int(canonical[-1, 1]) + 1
    tx_prefix = f"DEMOT{index + 1:06d}"
    chains: list[np.ndarray] = [canonical]
    if n_exons >= 3 and rng.random() < 0.4:
        site_set = {p for p, _ in _sites_of(canonical)}
        for _ in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(0, 5))
            ex = canonical.copy()
            new_site = None
            if kind == 0:                                  # exon skipping
                ex = np.delete(ex, int(rng.integers(1, n_exons - 1)), axis=0)
            elif kind in (1, 2):                           # alternative 5' / 3' splice site
                k = int(rng.integers(0, n_exons - 1))      # intron k: between exon k and k+1
                intron = int(intron_lengths[k])
                if intron < 220:
                    continue
                shift = int(rng.integers(40, min(150, intron - 150) + 1))
                if kind == 1:
                    ex[k, 1] += shift
                    new_site = int(ex[k, 1])
                else:
                    ex[k + 1, 0] -= shift
                    new_site = int(ex[k + 1, 0])
                if min(abs(new_site - p) for p in site_set) < 40:
                    continue
            elif kind == 3:                                # alternative first exon (drop exon 1)
                ex = ex[1:]
            else:                                          # alternative last exon (drop last)
                ex = ex[:-1]
            if any(ex.shape == c.shape and np.array_equal(ex, c) for c in chains):
                continue
            chains.append(ex)
            if new_site is not None:
                site_set.add(new_site)
    transcripts = tuple(_Transcript(f"{tx_prefix}.{i + 1}", ex) for i, ex in enumerate(chains))
    first: dict[int, tuple[int, int]] = {}
    for ti, tx in enumerate(transcripts):                 # ids sort like their creation order
        for pos, kind in _sites_of(tx.exons):
            first.setdefault(pos, (kind, ti))
    site_pos = np.array(sorted(first), dtype=np.int64)
    site_type = np.array([first[p][0] for p in site_pos], dtype=np.int64)
    site_tx = np.array([first[p][1] for p in site_pos], dtype=np.int64)
    return _GeneStructure(index, length, strand, transcripts, site_pos, site_type, site_tx)


def _site_distances(st: _GeneStructure) -> tuple[np.ndarray, np.ndarray]:
    """Strand-aware distance of each site to its transcript's 5' and 3' end."""
    tx_start = np.array([st.transcripts[t].start for t in st.site_tx], dtype=np.int64)
    tx_end = np.array([st.transcripts[t].end for t in st.site_tx], dtype=np.int64)
    return st.site_pos - tx_start, tx_end - st.site_pos


# --------------------------------------------------------------------------- sequence


def _plant(seq: np.ndarray, j: int, probs: list[tuple[int, tuple[float, ...]]],
           rng: np.random.Generator) -> None:
    """Set seq[j + offset] from the distribution (A, C, G, T) given for each offset."""
    offsets = np.array([o for o, _ in probs], dtype=np.int64)
    cum = np.cumsum(np.array([p for _, p in probs]), axis=1)[:, :3]
    seq[j + offsets] = (rng.random(len(probs))[:, None] >= cum).sum(axis=1)


def _mix(consensus: tuple[float, ...], q: float) -> tuple[float, ...]:
    """q of the consensus distribution, 1 - q of uniform background."""
    return tuple(q * c + (1.0 - q) * 0.25 for c in consensus)


_R = (0.6, 0.0, 0.4, 0.0)          # purine A/G
_Y = (0.0, 0.45, 0.0, 0.55)        # pyrimidine C/T
_ONE = {b: tuple(1.0 if i == b else 0.0 for i in range(4)) for b in range(4)}


def _plant_donor(seq: np.ndarray, j: int, q: float, rng: np.random.Generator) -> None:
    # exon ... M A G | G T R A G T ... intron ; q: strength of the non-core consensus
    _plant(seq, j, [
        (-2, _mix((0.55, 0.45, 0.0, 0.0), 0.5 + 0.4 * q)),
        (-1, _mix(_ONE[A], 0.45 + 0.5 * q)),
        (0, _mix(_ONE[G], 0.5 + 0.5 * q)),
        (3, _mix(_R, 0.2 + 0.8 * q)),
        (4, _mix(_ONE[A], 0.15 + 0.85 * q)),
        (5, _mix(_ONE[G], 0.15 + 0.85 * q)),
        (6, _mix(_ONE[T], 0.15 + 0.85 * q)),
    ], rng)
    seq[j + 1] = G
    seq[j + 2] = C if rng.random() < 0.012 else T


def _plant_acceptor(seq: np.ndarray, j: int, q: float, branch_point: bool,
                    rng: np.random.Generator) -> None:
    # intron ... branch point CTRAY ... polypyrimidine tract (-22..-4) Y A G | G exon
    if branch_point:
        b = j - int(rng.integers(28, 36))
        seq[b:b + 5] = (C, T, A if rng.random() < 0.7 else G, A, C if rng.random() < 0.5 else T)
    _plant(seq, j, [(o, _mix(_Y, 0.3 + 0.7 * q)) for o in range(-22, -3)]
           + [(-3, _mix(_Y, 0.6 + 0.4 * q)), (0, _mix(_ONE[G], 0.4))], rng)
    seq[j - 2] = A
    seq[j - 1] = G


def _region_map(st: _GeneStructure) -> np.ndarray:
    """0 flank, 1 exon (in any transcript), 2 intron, over the extended gene sequence."""
    region = np.zeros(st.length + 2 * FLANK, dtype=np.int64)
    region[FLANK:FLANK + st.length] = 2
    for tx in st.transcripts:
        for s, e in tx.exons:
            region[FLANK + s:FLANK + e + 1] = 1
    return region


def _gene_sequence(st: _GeneStructure, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gene's sequence (codes 0..3, transcript orientation) over [-FLANK, length + FLANK),
    and the positions of the planted decoy donors and acceptors."""
    rng = _rng(seed, st.index, _STREAM_SEQUENCE)
    region = _region_map(st)
    u = rng.random(len(region))
    seq = (u[:, None] >= _COMPOSITION_CUM[region]).sum(axis=1).astype(np.int8)
    exonic = np.flatnonzero(region == 1)
    # exonic splicing enhancers (GAAGAA) about one per 90 nt of exon
    n_ese = rng.poisson(len(exonic) / 90.0)
    if n_ese and len(exonic) > 6:
        for j in rng.choice(exonic[:-6], size=n_ese):
            if region[j + 5] == 1:
                seq[j:j + 6] = (G, A, A, G, A, A)
    # decoys: in every canonical intron long enough, sometimes a strong donor-like and/or
    # acceptor-like motif; now and then a donor-like one inside an exon
    decoy_donors: list[int] = []
    decoy_acceptors: list[int] = []
    taken = list(st.site_pos)

    def free(p: int, lo: int, hi: int) -> bool:
        return lo <= p <= hi and all(abs(p - x) >= 45 for x in taken)

    canonical = st.transcripts[0].exons
    for k in range(len(canonical) - 1):
        lo, hi = int(canonical[k, 1]) + 45, int(canonical[k + 1, 0]) - 45
        if hi - lo < 60:
            continue
        if rng.random() < 0.4:
            p = int(rng.integers(lo, hi + 1))
            if free(p, lo, hi):
                decoy_donors.append(p)
                taken.append(p)
        if rng.random() < 0.35:
            p = int(rng.integers(lo, hi + 1))
            if free(p, lo, hi):
                decoy_acceptors.append(p)
                taken.append(p)
    for s, e in canonical:
        if e - s >= 120 and rng.random() < 0.12:
            p = int(rng.integers(s + 20, e - 20 + 1))
            if free(p, int(s) + 20, int(e) - 20):
                decoy_donors.append(p)
                taken.append(p)
    for p in decoy_donors:
        q = 1.0 if rng.random() < 0.55 else float(rng.uniform(0.6, 0.95))
        _plant_donor(seq, FLANK + p, q, rng)
    for p in decoy_acceptors:
        _plant_acceptor(seq, FLANK + p, float(rng.uniform(0.8, 1.0)), rng.random() < 0.15, rng)
    # true sites last, so their motifs win any overlap; real exons carry enhancers (GAAGAA)
    # close to their splice sites, which the base model does not look at
    for p, kind in zip(st.site_pos, st.site_type):
        q = float(rng.beta(1.6, 1.0))
        if rng.random() < 0.6:
            e = FLANK + int(p) + (-int(rng.integers(12, 50)) if kind == _DONOR else int(rng.integers(6, 44)))
            if region[e] == 1 and region[e + 5] == 1:
                seq[e:e + 6] = (G, A, A, G, A, A)
        if kind == _DONOR:
            _plant_donor(seq, FLANK + int(p), q, rng)
        else:
            _plant_acceptor(seq, FLANK + int(p), q, rng.random() < 0.3 + 0.5 * q, rng)
    for p, kind in zip(st.site_pos, st.site_type):   # keep every core dinucleotide intact
        j = FLANK + int(p)
        if kind == _DONOR:
            seq[j + 1] = G
            if seq[j + 2] not in (T, C):
                seq[j + 2] = T
        else:
            seq[j - 2], seq[j - 1] = A, G
    return seq, np.array(decoy_donors, dtype=np.int64), np.array(decoy_acceptors, dtype=np.int64)


def demo_window(spec: DemoSpec, gene_id: str, position: int) -> str:
    """The 501-nt window (transcript orientation) that the sequence columns of the row
    ``(gene_id, position)`` of a dataset written with ``spec`` describe; regenerated, not stored."""
    index = _gene_index(gene_id)
    if not 0 <= index < spec.n_genes:
        raise ValueError(f"{gene_id} is not in a dataset of {spec.n_genes} genes")
    st = _gene_structure(spec.seed, index)
    if not 0 <= position < st.length:
        raise ValueError(f"position {position} outside {gene_id} (length {st.length})")
    seq, _, _ = _gene_sequence(st, spec.seed)
    j = FLANK + position
    return "".join(BASES[b] for b in seq[j - HALF_WINDOW:j + HALF_WINDOW + 1])


# --------------------------------------------------------------------------- base model


def _shift(x: np.ndarray, k: int, fill: float) -> np.ndarray:
    """y[i] = x[i - k] (fill outside)."""
    y = np.full_like(x, fill)
    if k > 0:
        y[k:] = x[:-k]
    elif k < 0:
        y[:k] = x[-k:]
    else:
        y[:] = x
    return y


def _base_model_tracks(st: _GeneStructure, seq: np.ndarray, decoy_donors: np.ndarray,
                       decoy_acceptors: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Donor, acceptor, neither probability of every position in [-2, length + 2)."""
    rng = _rng(seed, st.index, _STREAM_SCORES)
    n = st.length + 4
    j = np.arange(FLANK - 2, FLANK + st.length + 2)
    s = seq.astype(np.int64)
    gt = (s[j + 1] == G) & (s[j + 2] == T)
    gc = (s[j + 1] == G) & (s[j + 2] == C)
    ext = ((s[j + 3] == A) | (s[j + 3] == G)).astype(np.int64) + (s[j + 4] == A) \
        + (s[j + 5] == G) + (s[j + 6] == T)
    exo = ((s[j - 2] == A) | (s[j - 2] == C)).astype(np.int64) + (s[j - 1] == A) + (s[j] == G)
    ag = (s[j - 2] == A) & (s[j - 1] == G)
    pyr = ((s == C) | (s == T)).astype(np.int64)
    cum = np.concatenate([[0], np.cumsum(pyr)])
    ppt = (cum[j - 3] - cum[j - 22]) / 19.0           # pyrimidine fraction of -22..-4
    ym3 = pyr[j - 3]

    # motif logits: the model over-trusts a perfect +3..+6 consensus and a strong tract
    donor = np.where(
        gt | gc,
        -11.0 + 1.35 * ext + 0.7 * exo + 2.6 * (ext == 4) - 2.0 * gc,
        -15.0,
    ) + rng.normal(0.0, 1.0, n)
    acceptor = np.where(
        ag,
        -9.9 + 11.0 * (ppt - 0.5) + 1.0 * ym3 + 2.4 * (ppt >= 0.84),
        -15.0,
    ) + rng.normal(0.0, 1.0, n)
    # what the model "knows" about real sites beyond the motif (noisy)
    idx = st.site_pos + 2
    bonus = rng.normal(5.4, 1.4, len(idx))
    is_donor = st.site_type == _DONOR
    donor[idx[is_donor]] += bonus[is_donor]
    acceptor[idx[~is_donor]] += bonus[~is_donor]
    # a few peaks are misplaced by 1-2 nt (a TP by the ±2 rule plus an FP beside it)
    site_set = set(st.site_pos.tolist())
    for p, kind in zip(st.site_pos, st.site_type):
        if rng.random() < 0.04:
            delta = int(rng.choice([-2, -1, 1, 2]))
            q = int(p) + delta
            if 0 <= q < st.length and q not in site_set:
                track = donor if kind == _DONOR else acceptor
                track[p + 2], track[q + 2] = track[q + 2], track[p + 2]
    # peaks bleed (noisily) into their neighbours; decoy peaks are a little broader
    drop1 = np.full(n, 10.5)
    drop2 = np.full(n, 12.5)
    for decoys in (decoy_donors, decoy_acceptors):
        drop1[decoys + 2] = 9.0
        drop2[decoys + 2] = 11.0
    tracks = []
    for x in (donor, acceptor):
        bleed = [
            _shift(x - drop + rng.normal(0.0, 1.2, n), k, -30.0)
            for drop, k in ((drop1, 1), (drop1, -1), (drop2, 2), (drop2, -2))
        ]
        tracks.append(np.maximum.reduce([x, *bleed]))
    ld, la = tracks
    m = np.maximum(np.maximum(ld, la), 0.0)
    ed, ea, en = np.exp(ld - m), np.exp(la - m), np.exp(-m)
    z = ed + ea + en
    return ed / z, ea / z, en / z


# --------------------------------------------------------------------------- one gene's rows


@dataclass(frozen=True)
class _Layout:
    chrom: np.ndarray          # chromosome name per gene
    start: np.ndarray          # 1-based gene start
    overlaps: np.ndarray       # num_overlaps
    backfill_start: float      # distance_to_start of negative rows
    backfill_end: float        # distance_to_end of negative rows


@dataclass
class _GeneRows:
    index: int
    structure: _GeneStructure
    seq: np.ndarray
    positions: np.ndarray
    columns: dict[str, np.ndarray]     # numeric columns (per row)
    transcript_ids: list[str]
    label: np.ndarray
    pred: np.ndarray


def _select_positions(st: _GeneStructure, donor: np.ndarray, acceptor: np.ndarray,
                      spec: DemoSpec, rng: np.random.Generator) -> np.ndarray:
    length = st.length
    chosen = np.zeros(length, dtype=bool)
    chosen[st.site_pos] = True
    # hard negatives: every non-site position the base model scores >= 0.02
    smax = np.maximum(donor[2:length + 2], acceptor[2:length + 2])
    chosen |= smax >= HARD_NEGATIVE_MIN_SCORE
    # the gene's row target (mean spec.rows_per_gene)
    target = int(round(spec.rows_per_gene * math.exp(rng.normal(0.0, 0.3) - 0.3**2 / 2)))
    # up to 2 near-site negatives within ±50 nt of each site (1 when the target is tight)
    n_sites = len(st.site_pos)
    spare = target - int(chosen.sum()) - MIN_RANDOM_NEGATIVES
    per_site = NEAR_SITE_PER_SITE if spare >= NEAR_SITE_PER_SITE * n_sites else 1
    for p in st.site_pos:
        lo, hi = max(0, int(p) - NEAR_SITE_RADIUS), min(length, int(p) + NEAR_SITE_RADIUS + 1)
        free = lo + np.flatnonzero(~chosen[lo:hi])
        if len(free):
            chosen[rng.choice(free, size=min(per_site, len(free)), replace=False)] = True
    # random positions up to the target
    free = np.flatnonzero(~chosen)
    n_random = min(len(free), max(MIN_RANDOM_NEGATIVES, target - int(chosen.sum())))
    if n_random:
        chosen[rng.choice(free, size=n_random, replace=False)] = True
    return np.flatnonzero(chosen)


def _simulate_gene(spec: DemoSpec, index: int, layout: _Layout) -> _GeneRows:
    st = _gene_structure(spec.seed, index)
    seq, decoy_d, decoy_a = _gene_sequence(st, spec.seed)
    donor_tr, acceptor_tr, neither_tr = _base_model_tracks(st, seq, decoy_d, decoy_a, spec.seed)
    pos = _select_positions(st, donor_tr, acceptor_tr, spec, _rng(spec.seed, index, _STREAM_SAMPLING))
    n = len(pos)
    t = pos + 2                                            # index into the tracks
    nb = t[:, None] + np.arange(-2, 3)[None, :]            # -2..+2
    dwin, awin = donor_tr[nb], acceptor_tr[nb]
    d, a, nt = donor_tr[t], acceptor_tr[t], neither_tr[t]

    label = np.zeros(n, dtype=np.int64)
    row_of_site = np.searchsorted(pos, st.site_pos)
    label[row_of_site] = st.site_type
    site_tx = np.full(n, -1, dtype=np.int64)
    site_tx[row_of_site] = st.site_tx

    # the row's own track: its type's for sites; for neither, donor if d >= a else acceptor
    use_donor = np.where(label == _NEITHER, d >= a, label == _DONOR)
    own = np.where(use_donor[:, None], dwin, awin)
    context = own[:, [0, 1, 3, 4]]
    score = np.where(label == _DONOR, d, np.where(label == _ACCEPTOR, a, np.maximum(d, a)))

    pred = np.where(np.maximum(d, a) >= PRED_THRESHOLD, _FP, _TN)
    site_hit = own.max(axis=1) >= PRED_THRESHOLD            # within ±2 nt, own type
    pred = np.where(label != _NEITHER, np.where(site_hit, _TP, _FN), pred)

    gene_start = int(layout.start[index])
    gene_end = gene_start + st.length - 1
    absolute = gene_start + pos if st.strand == "+" else gene_end - pos

    cols: dict[str, np.ndarray] = {
        "position": pos.astype(np.int64),
        "absolute_position": absolute.astype(np.int64),
        "window_start": (absolute - HALF_WINDOW).astype(np.int64),
        "window_end": (absolute + HALF_WINDOW).astype(np.int64),
        "transcript_count": np.full(n, len(st.transcripts), dtype=np.int64),
        "true_position": absolute.astype(np.int64),           # masked to sites when written
        "predicted_position": absolute.astype(np.int64),      # masked to TP / FP when written
        "donor_score": d, "acceptor_score": a, "neither_score": nt, "score": score,
    }
    cols.update(zip(schema.CONTEXT_COLUMNS, context.T))
    cols.update(derive_score_features(d, a, nt, dwin, awin, context))

    # sequence summary of each 501-nt window (k-mers are counted when the file is assembled)
    ws = FLANK + pos - HALF_WINDOW
    counts = np.empty((n, 4))
    for b in range(4):
        cum = np.concatenate([[0], np.cumsum(seq == b)])
        counts[:, b] = cum[ws + WINDOW_LENGTH] - cum[ws]
    acgt = counts.sum(axis=1)
    freq = counts / acgt[:, None]
    cols["gc_content"] = (counts[:, C] + counts[:, G]) / acgt
    cols["sequence_length"] = np.full(n, WINDOW_LENGTH, dtype=np.int64)
    cols["sequence_complexity"] = -np.sum(
        np.where(freq > 0, freq * np.log2(np.where(freq > 0, freq, 1.0)), 0.0), axis=1)

    # gene / transcript structure; negatives are back-filled like MetaSpliceAI's datasets
    is_site = label != _NEITHER
    tx_feats = np.array([tx.features() for tx in st.transcripts])        # relative tx_start/end
    f = tx_feats[np.maximum(site_tx, 0)]
    if st.strand == "+":
        tx_start_abs, tx_end_abs = gene_start + f[:, 0], gene_start + f[:, 1]
    else:
        tx_start_abs, tx_end_abs = gene_end - f[:, 1], gene_end - f[:, 0]
    ones, zeros = np.ones(n), np.zeros(n)
    cols.update({
        "gene_start": np.full(n, gene_start, dtype=np.int64),
        "gene_end": np.full(n, gene_end, dtype=np.int64),
        "gene_length": np.full(n, st.length, dtype=np.int64),
        "tx_start": np.where(is_site, tx_start_abs, float(gene_start)),
        "tx_end": np.where(is_site, tx_end_abs, float(gene_end)),
        "transcript_length": np.where(is_site, f[:, 2], float(st.length)),
        "num_exons": np.where(is_site, f[:, 3], 0).astype(np.int64),
        "avg_exon_length": np.where(is_site, f[:, 4], zeros),
        "median_exon_length": np.where(is_site, f[:, 5], zeros),
        "total_exon_length": np.where(is_site, f[:, 6], zeros),
        "total_intron_length": np.where(is_site, f[:, 7], zeros),
        "n_splice_sites": np.full(n, len(st.site_pos), dtype=np.int64),
        "num_overlaps": np.full(n, int(layout.overlaps[index]), dtype=np.int64),
        "distance_to_start": np.where(is_site, pos - f[:, 0], layout.backfill_start),
        "distance_to_end": np.where(is_site, f[:, 1] - pos, layout.backfill_end),
        "has_tx_info": is_site.astype(np.int64),
        "has_gene_info": ones.astype(np.int64),
        "missing_transcript_feats": (~is_site).astype(np.int64),
    })
    tids = [st.transcripts[t].transcript_id if t >= 0 else "" for t in site_tx]
    return _GeneRows(index, st, seq, pos, cols, tids, label, pred)


# --------------------------------------------------------------------------- dataset layout


def _layout(spec: DemoSpec) -> _Layout:
    """Chromosome, coordinates and overlaps of every gene, and the back-fill distances.

    Needs only the gene structures (cheap), so a first pass over all genes is affordable."""
    n = spec.n_genes
    lengths = np.empty(n, dtype=np.int64)
    max_start = max_end = 0
    for i in range(n):
        st = _gene_structure(spec.seed, i)
        lengths[i] = st.length
        if len(st.site_pos):
            ds, de = _site_distances(st)
            max_start, max_end = max(max_start, int(ds.max())), max(max_end, int(de.max()))
    rng = _rng(spec.seed, 0, _STREAM_LAYOUT)
    n_chrom = min(spec.chrom_count, n)
    chrom_idx = (np.arange(n) * n_chrom) // n
    starts = np.empty(n, dtype=np.int64)
    overlaps = np.zeros(n, dtype=np.int64)
    for c in range(n_chrom):
        members = np.flatnonzero(chrom_idx == c)
        cursor = 5_000 + int(rng.integers(0, 20_000))
        for i in members:
            starts[i] = cursor
            if rng.random() < 0.08:                        # next gene overlaps this one
                cursor += int(lengths[i]) - int(rng.integers(30, max(31, min(int(lengths[i]), 600))))
            else:
                cursor += int(lengths[i]) + int(rng.lognormal(math.log(1500), 0.9))
        s, e = starts[members], starts[members] + lengths[members] - 1
        for a in range(len(members)):
            hi = int(np.searchsorted(s, e[a], side="right"))
            for b in range(a + 1, hi):
                overlaps[members[a]] += 1
                overlaps[members[b]] += 1
    chrom = np.array([f"chr{c + 1}" for c in chrom_idx], dtype=object)
    return _Layout(chrom, starts, overlaps, float(max_start + BACKFILL_DISTANCE_MARGIN),
                   float(max_end + BACKFILL_DISTANCE_MARGIN))


def _kmer_codes(seq: np.ndarray, k: int) -> np.ndarray:
    """Base-4 code of the k-mer starting at each position (first base most significant)."""
    code = np.zeros(len(seq) - k + 1, dtype=np.int64)
    for i in range(k):
        code = code * 4 + seq[i:len(seq) - k + 1 + i]
    return code


def _numeric_array(values: np.ndarray, null_mask: np.ndarray | None = None) -> pa.Array:
    """Zero-copy Arrow array over a contiguous int64/float64 numpy array (``null_mask`` True =
    null). Built from buffers: ``pa.array`` would import pandas just to probe the input."""
    values = np.ascontiguousarray(values)
    arrow_type = {np.dtype(np.int64): pa.int64(), np.dtype(np.float64): pa.float64()}[values.dtype]
    validity = None
    if null_mask is not None and null_mask.any():
        validity = pa.py_buffer(np.packbits(~null_mask, bitorder="little"))
    return pa.Array.from_buffers(arrow_type, len(values), [validity, pa.py_buffer(values)])


def _string_array(values: list[str] | tuple[str, ...]) -> pa.Array:
    """Arrow string array built from buffers (no pandas probe, see ``_numeric_array``)."""
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )


def _file_table(genes: list[_GeneRows], spec: DemoSpec, layout: _Layout,
                arrow_schema: pa.Schema) -> pa.Table:
    n_rows = sum(len(g.positions) for g in genes)
    gene_of_row = _numeric_array(np.repeat(np.arange(len(genes), dtype=np.int64), [len(g.positions) for g in genes]))
    per_gene = {
        "gene_id": [demo_gene_id(g.index) for g in genes],
        "gene_name": [f"demo{g.index + 1}" for g in genes],
        "chrom": [layout.chrom[g.index] for g in genes],
        "strand": [g.structure.strand for g in genes],
        "gene_type": ["protein_coding"] * len(genes),
    }
    label = np.concatenate([g.label for g in genes])
    pred = np.concatenate([g.pred for g in genes])
    arrays: dict[str, pa.Array] = {
        name: _string_array(values).take(gene_of_row) for name, values in per_gene.items()
    }
    arrays["transcript_id"] = _string_array([t for g in genes for t in g.transcript_ids])
    arrays["splice_type"] = _string_array(schema.CLASSES).take(_numeric_array(label))
    arrays["pred_type"] = _string_array(_PRED_TYPES).take(_numeric_array(pred))
    masks = {"true_position": label == _NEITHER, "predicted_position": (pred == _TN) | (pred == _FN)}
    for name in genes[0].columns:
        values = np.concatenate([g.columns[name] for g in genes])
        arrays[name] = _numeric_array(values, masks.get(name))
    # k-mer counts: one column-major block per k, filled gene by gene (zero-copy into Arrow)
    for k in spec.kmer_sizes:
        width = 4**k
        block = np.empty((n_rows, width), dtype=np.float64, order="F")
        n_kmers = WINDOW_LENGTH - k + 1
        offset = 0
        for g in genes:
            codes = _kmer_codes(g.seq.astype(np.int64), k)
            r = len(g.positions)
            starts = FLANK + g.positions - HALF_WINDOW
            idx = codes[starts[:, None] + np.arange(n_kmers)[None, :]]
            idx += (np.arange(r) * width)[:, None]
            block[offset:offset + r] = np.bincount(idx.ravel(), minlength=r * width).reshape(r, width)
            offset += r
        for c, name in enumerate(kmer_columns(k)):
            arrays[name] = _numeric_array(block[:, c])
    return pa.Table.from_arrays([arrays[f.name] for f in arrow_schema], schema=arrow_schema)


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, compression=PARQUET_COMPRESSION, row_group_size=max(1, table.num_rows))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_demo_dataset(out_dir: str | Path, spec: DemoSpec = DemoSpec(), workers: int = 1) -> dict:
    """Write a demo dataset to ``<out_dir>/master/`` and return its summary.

    ``master/batch_00001.parquet`` ... (zstd, ``spec.genes_per_file`` genes each, a gene's rows
    never split, genes in genomic order, rows of a gene by position) and
    ``master/gene_manifest.csv``, and ``dataset.json`` beside ``master`` (``declaration``). The whole ``master`` directory is built under a temporary name
    in ``out_dir`` and swapped in at the end, so ``out_dir/master`` is either the previous
    content or the complete new dataset, never half of one. Returns
    ``{"genes", "rows", "files", "columns", "label_counts", "pred_type_counts", "path"}``.
    ``workers`` > 1 writes the files in that many processes (the bytes are the same: every gene
    draws from its own seeded streams); memory then grows with ``workers``, not ``n_genes``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / MASTER_DIR
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work = out / f".{MASTER_DIR}.tmp-{token}"
    work.mkdir()
    try:
        summary = _write_master(work, spec, workers)
        if final.exists():
            old = out / f".{MASTER_DIR}.old-{token}"
            os.replace(final, old)
            os.replace(work, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    summary["path"] = str(final)
    _write_declaration(out / DECLARATION_NAME, spec)
    return summary


def declaration(spec: DemoSpec) -> dict:
    """The demo dataset's ``dataset.json``: provenance and the row selection ``_select_positions``
    guarantees (every position of a gene with max(donor, acceptor) >= HARD_NEGATIVE_MIN_SCORE)."""
    return {
        "format": "metaspliceai-positions",
        "name": f"ensemble_assets demo (seed {spec.seed}, {spec.n_genes} genes)",
        "species": "none: synthetic sequences",
        "assembly": "none: synthetic coordinates",
        "chromosomes": [f"chr{c + 1}" for c in range(min(spec.chrom_count, spec.n_genes))],
        "annotation": "simulated exon/intron structures, 1-4 transcripts per gene",
        "base_model": "a simulated SpliceAI-like predictor (motif score plus a noisy site term)",
        "position": "gene-relative, transcript orientation, 0 = the gene's 5' end",
        "row_selection": {
            "every_position_with_max_score_at_least": HARD_NEGATIVE_MIN_SCORE,
            "max_score": "max(donor_score, acceptor_score)",
            "also": [
                "every annotated donor and acceptor of every transcript",
                f"up to {NEAR_SITE_PER_SITE} near-site negatives within {NEAR_SITE_RADIUS} nt of each site "
                "(1 where the gene's row target is tight)",
                f"random positions of the gene, at least {MIN_RANDOM_NEGATIVES}, up to its row target "
                f"(mean {spec.rows_per_gene} rows per gene)",
            ],
        },
    }


def _write_declaration(path: Path, spec: DemoSpec) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps(declaration(spec), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_file(master: Path, spec: DemoSpec, layout: _Layout, file_index: int) -> dict:
    """Simulate and write one output file; return its rows, counts and gene-manifest lines."""
    first = (file_index - 1) * spec.genes_per_file
    genes = [_simulate_gene(spec, i, layout)
             for i in range(first, min(spec.n_genes, first + spec.genes_per_file))]
    file_name = f"batch_{file_index:05d}.parquet"
    table = _file_table(genes, spec, layout, _arrow_schema(spec.kmer_sizes))
    _write_parquet_atomic(table, master / file_name)
    out = {"rows": table.num_rows, "labels": [0] * len(schema.CLASSES), "preds": [0] * len(_PRED_TYPES),
           "manifest": []}
    del table
    for g in genes:
        for code in range(len(schema.CLASSES)):
            out["labels"][code] += int(np.sum(g.label == code))
        for code in range(len(_PRED_TYPES)):
            out["preds"][code] += int(np.sum(g.pred == code))
        st = g.structure
        n_donor = int(np.sum(st.site_type == _DONOR))
        n_sites = len(st.site_pos)
        start = int(layout.start[g.index])
        out["manifest"].append([
            g.index, demo_gene_id(g.index), f"demo{g.index + 1}", "protein_coding",
            layout.chrom[g.index], st.strand, st.length, start, start + st.length - 1,
            n_sites, n_donor, n_sites - n_donor,
            f"{1000.0 * n_sites / st.length:.6f}", file_index, file_name,
        ])
    return out


_WORKER_JOB: tuple[Path, DemoSpec, _Layout] | None = None   # set before forking the writers


def _write_file_in_worker(file_index: int) -> dict:
    assert _WORKER_JOB is not None
    return _write_file(*_WORKER_JOB, file_index)


def _write_master(master: Path, spec: DemoSpec, workers: int = 1) -> dict:
    global _WORKER_JOB
    layout = _layout(spec)
    arrow_schema = _arrow_schema(spec.kmer_sizes)
    label_counts = dict.fromkeys(schema.CLASSES, 0)
    pred_counts = dict.fromkeys(("TP", "FP", "FN", "TN"), 0)
    rows = 0
    indices = range(1, spec.n_files + 1)
    if workers > 1 and spec.n_files > 1:
        import multiprocessing as mp

        _WORKER_JOB = (master, spec, layout)   # inherited by the forked workers, never serialised
        try:
            with mp.get_context("fork").Pool(min(workers, spec.n_files)) as pool:
                results = pool.imap(_write_file_in_worker, indices)
                parts = list(results)
        finally:
            _WORKER_JOB = None
    else:
        parts = (_write_file(master, spec, layout, i) for i in indices)
    manifest_tmp = master / f".{MANIFEST_NAME}.tmp"
    with open(manifest_tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for part in parts:
            rows += part["rows"]
            for code, name in enumerate(schema.CLASSES):
                label_counts[name] += part["labels"][code]
            for code, name in enumerate(_PRED_TYPES):
                pred_counts[name] += part["preds"][code]
            writer.writerows(part["manifest"])
    os.replace(manifest_tmp, master / MANIFEST_NAME)
    return {
        "genes": spec.n_genes,
        "rows": rows,
        "files": spec.n_files,
        "columns": len(arrow_schema),
        "label_counts": label_counts,
        "pred_type_counts": pred_counts,
    }
