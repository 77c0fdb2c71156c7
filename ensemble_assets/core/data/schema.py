"""The input data contract (docs/architecture.md#data-contract): column families, label encoding, feature eligibility."""

from __future__ import annotations

import re

CLASSES: tuple[str, ...] = ("neither", "donor", "acceptor")
LABEL_CODES: dict[str, int] = {"neither": 0, "donor": 1, "acceptor": 2}
# spellings that mean "neither" in MetaSpliceAI datasets
NEITHER_ALIASES: tuple[str, ...] = ("", "0", "neither")

GENE_COLUMN = "gene_id"
LABEL_COLUMN = "splice_type"
REQUIRED_COLUMNS: tuple[str, ...] = (GENE_COLUMN, LABEL_COLUMN)

ID_COLUMNS: tuple[str, ...] = (
    "gene_id", "transcript_id", "position", "chrom", "strand", "gene_type", "gene_name",
    "absolute_position", "window_start", "window_end", "transcript_count",
)
LEAKAGE_COLUMNS: tuple[str, ...] = (
    "splice_type", "pred_type", "true_position", "predicted_position", "sequence", "score",
)
BASE_SCORE_COLUMNS: tuple[str, ...] = ("donor_score", "acceptor_score", "neither_score")
CONTEXT_COLUMNS: tuple[str, ...] = (
    "context_score_m2", "context_score_m1", "context_score_p1", "context_score_p2",
)
_PER_TYPE_SUFFIXES: tuple[str, ...] = (
    "diff_m1", "diff_m2", "diff_p1", "diff_p2", "surge_ratio", "is_local_peak",
    "weighted_context", "peak_height_ratio", "second_derivative", "signal_strength",
    "context_diff_ratio",
)
DERIVED_COLUMNS: tuple[str, ...] = (
    "relative_donor_probability", "splice_probability", "donor_acceptor_diff",
    "splice_neither_diff", "donor_acceptor_logodds", "splice_neither_logodds",
    "probability_entropy", "context_neighbor_mean", "context_asymmetry", "context_max",
    *(f"{t}_{s}" for t in ("donor", "acceptor") for s in _PER_TYPE_SUFFIXES),
    "donor_acceptor_peak_ratio", "type_signal_difference", "score_difference_ratio",
    "signal_strength_ratio",
)
SEQUENCE_COLUMNS: tuple[str, ...] = ("gc_content", "sequence_length", "sequence_complexity")
GENE_STRUCTURE_COLUMNS: tuple[str, ...] = (
    "gene_start", "gene_end", "gene_length", "tx_start", "tx_end", "transcript_length",
    "num_exons", "avg_exon_length", "median_exon_length", "total_exon_length",
    "total_intron_length", "n_splice_sites", "num_overlaps", "distance_to_start",
    "distance_to_end", "has_tx_info", "has_gene_info", "missing_transcript_feats",
)
# back-filled for negative rows in MetaSpliceAI datasets: they encode the label
STRUCTURAL_LEAKAGE_COLUMNS: tuple[str, ...] = (
    "tx_start", "tx_end", "transcript_length", "num_exons", "avg_exon_length",
    "median_exon_length", "total_exon_length", "total_intron_length", "distance_to_start",
    "distance_to_end", "has_tx_info", "has_gene_info", "missing_transcript_feats",
)
# the number of the gene's annotated sites: its labels, counted (a gene whose count is 0 has no
# site at all); never known for a gene the model is asked about
GENE_LABEL_COUNT_COLUMNS: tuple[str, ...] = ("n_splice_sites",)
# the "own track" context of MetaSpliceAI: a site row takes its label's track (donor rows the
# donor track), a negative the track of its larger score, so which track a value comes from
# depends on the label; donor_*/acceptor_* carry both tracks, chosen without the label
LABEL_CHOSEN_TRACK_COLUMNS: tuple[str, ...] = (
    *CONTEXT_COLUMNS, "context_neighbor_mean", "context_asymmetry", "context_max",
)
# computed, not read: where the position lies in its gene (transcript orientation), from the
# dataset's ``position`` (0 = the gene's 5' end) and ``gene_length``
GENE_POSITION_SOURCES: tuple[str, ...] = ("position", "gene_length")
GENE_POSITION_FEATURES: tuple[str, ...] = ("gene_offset_5p", "gene_offset_3p", "gene_relative_position")
# computed, not read, and only where the dataset holds every position of a gene whose donor or
# acceptor score reaches CANDIDATE_MIN_SCORE (MetaSpliceAI's row selection keeps every position
# scoring >= 0.02), from those candidate positions and their base scores alone (transcript
# orientation): per track (donor, acceptor) and direction (upstream, downstream)
CANDIDATE_MIN_SCORE = 0.02
GENE_CONTEXT_SOURCES: tuple[str, ...] = ("gene_id", "position", "gene_length", "donor_score", "acceptor_score")
_TRACK_DIRECTIONS = tuple(f"{t}_{d}" for t in ("donor", "acceptor") for d in ("upstream", "downstream"))
# the nearest other candidate scoring at least the suffix's score: "" 0.1 (the first gene-context
# features; their meaning is kept for the models trained with them), "_min02" 0.02, "_min30" 0.3,
# "_min60" 0.6
NEAREST_MIN_SCORES: dict[str, float] = {"": 0.1, "_min02": CANDIDATE_MIN_SCORE, "_min30": 0.3, "_min60": 0.6}
# nucleotides to it; the gene's length where there is none
GENE_CONTEXT_DISTANCE_FEATURES: tuple[str, ...] = tuple(f"nearest_{td}" for td in _TRACK_DIRECTIONS)
# that nearest candidate's base score (of its track); 0 where there is none
GENE_CONTEXT_SCORE_FEATURES: tuple[str, ...] = tuple(f"nearest_{td}_score" for td in _TRACK_DIRECTIONS)
# the same two for every candidate (>= 0.02), and the distance to the second-nearest one
GENE_CONTEXT_ALL_CANDIDATE_FEATURES: tuple[str, ...] = tuple(
    f for td in _TRACK_DIRECTIONS for f in (f"nearest_{td}_min02", f"nearest_{td}_min02_score", f"second_{td}_min02"))
# the distance to the nearest strong candidate (>= 0.3, >= 0.6)
GENE_CONTEXT_STRONG_FEATURES: tuple[str, ...] = tuple(
    f"nearest_{td}{suffix}" for td in _TRACK_DIRECTIONS for suffix in ("_min30", "_min60"))
# the highest base score of the track among the other candidates within ±W nt: the competition
LOCAL_WINDOWS_NT: tuple[int, ...] = (10, 50, 200)
GENE_CONTEXT_LOCAL_FEATURES: tuple[str, ...] = tuple(
    f"{t}_max_within_{w}nt" for t in ("donor", "acceptor") for w in LOCAL_WINDOWS_NT)
GENE_CONTEXT_FEATURES: tuple[str, ...] = (*GENE_CONTEXT_DISTANCE_FEATURES, *GENE_CONTEXT_SCORE_FEATURES,
                                          *GENE_CONTEXT_ALL_CANDIDATE_FEATURES, *GENE_CONTEXT_STRONG_FEATURES,
                                          *GENE_CONTEXT_LOCAL_FEATURES)
# chromosome-level leakage across instances
NON_FEATURE_BY_DEFAULT: tuple[str, ...] = ("chrom",)
# absolute genomic coordinates: a number on one assembly's axis, meaningless for another genome,
# chromosome or assembly version (a model would learn where genes are, not what a site looks
# like); never features, whatever include_structural or include_chrom say
COORDINATE_COLUMNS: tuple[str, ...] = (
    "gene_start", "gene_end", "tx_start", "tx_end", "absolute_position", "window_start", "window_end",
    "true_position", "predicted_position",
)
COORDINATE_PREFIXES: tuple[str, ...] = ("window_",)

# Arrow types of the MetaSpliceAI layout (as in atha_chr1): strings for ids and labels, int64
# for positions, counts and flags (true_position / predicted_position nullable), float64 for
# every other column (scores, derived, sequence, k-mer counts, lengths and distances).
STRING_COLUMNS: tuple[str, ...] = (
    "gene_id", "transcript_id", "chrom", "strand", "gene_type", "gene_name", "splice_type",
    "pred_type", "sequence",
)
INT64_COLUMNS: tuple[str, ...] = (
    "position", "absolute_position", "window_start", "window_end", "transcript_count",
    "true_position", "predicted_position", "donor_is_local_peak", "acceptor_is_local_peak",
    "sequence_length", "gene_start", "gene_end", "gene_length", "num_exons", "n_splice_sites",
    "num_overlaps", "has_tx_info", "has_gene_info", "missing_transcript_feats",
)
NULLABLE_COLUMNS: tuple[str, ...] = ("true_position", "predicted_position")

KMER_PATTERN = re.compile(r"^(\d+)mer_[ACGTN]+$")


def is_coordinate(column: str) -> bool:
    """True for absolute genomic coordinates (``COORDINATE_COLUMNS``, ``window_*``): never features."""
    return column in COORDINATE_COLUMNS or column.startswith(COORDINATE_PREFIXES)


def is_kmer(column: str) -> bool:
    """True for k-mer count columns such as ``3mer_AAA`` or ``5mer_GTAAG`` (any k)."""
    return KMER_PATTERN.match(column) is not None


def feature_family(column: str) -> str:
    """The data-contract family of a column name (``other`` for unknown numeric columns)."""
    if column in LEAKAGE_COLUMNS:
        return "leakage"
    if column in GENE_POSITION_FEATURES:
        return "gene_position"
    if column in GENE_CONTEXT_FEATURES:
        return "gene_context"
    if column in ID_COLUMNS or column == "chrom":
        return "id"
    if column in BASE_SCORE_COLUMNS:
        return "base_score"
    if column in CONTEXT_COLUMNS:
        return "context"
    if column in DERIVED_COLUMNS:
        return "derived"
    if is_kmer(column):
        return "kmer"
    if column in SEQUENCE_COLUMNS:
        return "sequence"
    if column in GENE_STRUCTURE_COLUMNS:
        return "structure"
    return "other"


# families whose columns the data contract defines as numbers (a string there is an input error)
NUMERIC_FAMILIES: tuple[str, ...] = ("base_score", "context", "derived", "kmer", "sequence", "structure")


def is_contract_numeric(column: str) -> bool:
    """True for columns the data contract defines as numeric (scores, derived and sequence
    features, k-mer counts, gene/transcript structure, positions and counts)."""
    return column in INT64_COLUMNS or feature_family(column) in NUMERIC_FAMILIES
