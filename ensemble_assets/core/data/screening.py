"""Feature screening: the feature manifest — every column, whether it is a feature, and why not."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa

from ensemble_assets.core.data.contract import DatasetError, ParquetDataset, label_codes
from ensemble_assets.core.data.declaration import gene_context_decision, read_declaration
from ensemble_assets.core.data.exact_stats import (
    CORRELATION_BITS,
    MEAN_BITS,
    center_and_bound,
    correlation_from_sums,
    exact_label_correlation,
    exact_mean,
    fixed_point_sql,
    mean_from_sum,
    scale_exponent,
)
from ensemble_assets.core.data.features import source_columns, to_feature_matrix
from ensemble_assets.core.data.inventory import LABEL_SQL, _source, connect, internal_name
from ensemble_assets.core.data.read_errors import read_errors
from ensemble_assets.core.data.schema import (
    GENE_COLUMN,
    GENE_CONTEXT_FEATURES,
    GENE_CONTEXT_SOURCES,
    GENE_LABEL_COUNT_COLUMNS,
    GENE_POSITION_FEATURES,
    GENE_POSITION_SOURCES,
    ID_COLUMNS,
    LABEL_CHOSEN_TRACK_COLUMNS,
    LABEL_COLUMN,
    LEAKAGE_COLUMNS,
    NON_FEATURE_BY_DEFAULT,
    STRUCTURAL_LEAKAGE_COLUMNS,
    feature_family,
    is_coordinate,
    is_kmer,
)
from ensemble_assets.core.data.sql import _quote

COORDINATE_REASON = "coordinate: an absolute genomic position, meaningless across genomes and assemblies"
# the largest k-mer size kept by default (ScreeningSettings.kmer_sizes None)
DEFAULT_MAX_KMER_SIZE = 3


@dataclass(frozen=True)
class ScreeningSettings:
    correlation_threshold: float = 0.95   # |corr(feature, is_splice)| at or above → excluded
    sample_genes: int = 1000              # genes sampled for the correlation screen
    seed: int = 42
    exclude: tuple[str, ...] = ()         # user exclusions
    include_structural: bool = False      # keep back-filled structural columns (they leak!)
    include_chrom: bool = False
    gene_position: bool = True            # compute GENE_POSITION_FEATURES from position and gene_length
    # compute GENE_CONTEXT_FEATURES: only for a dataset that holds every position of a gene whose
    # donor or acceptor score reaches CANDIDATE_MIN_SCORE (else their rows are a label-driven sample).
    # None: follow the dataset's declaration (dataset.json); True / False: explicit
    gene_context: bool | None = None
    # k-mer sizes kept as features; None (the default): the sizes up to DEFAULT_MAX_KMER_SIZE. On
    # validation genes of atha_chr1 the 5-mers added nothing measurable over the 3-mers while
    # multiplying the features by ten (memory and training time ×3–5): docs/results.md#why-the-
    # defaults-are-what-they-are. An explicit tuple wins, e.g. (3, 5) for every size of atha_chr1.
    kmer_sizes: tuple[int, ...] | None = None


def kmer_size_selected(column: str, kmer_sizes: tuple[int, ...] | None) -> bool:
    """Whether the k-mer ``column`` is kept: its size is in ``kmer_sizes``, or, when that is None,
    at most ``DEFAULT_MAX_KMER_SIZE``."""
    k = kmer_size(column)
    return k <= DEFAULT_MAX_KMER_SIZE if kmer_sizes is None else k in kmer_sizes


def kmer_size(column: str) -> int:
    """k of the k-mer column ``column`` (``3mer_AAA`` → 3)."""
    return int(column.split("mer_")[0])


def check_selection(ds: ParquetDataset, settings: ScreeningSettings) -> None:
    """A name in ``exclude`` must be a column of the dataset or a computed feature, and each size in
    ``kmer_sizes`` must have k-mer columns: a typo would otherwise keep the feature, or drop every
    k-mer, without a word."""
    known = set(ds.columns) | set(GENE_POSITION_FEATURES) | set(GENE_CONTEXT_FEATURES)
    unknown = [c for c in settings.exclude if c not in known]
    if unknown:
        close = {c: difflib.get_close_matches(c, sorted(known), n=3) for c in unknown}
        hints = "; ".join(f"'{c}' (did you mean {', '.join(m)}?)" if m else f"'{c}'" for c, m in close.items())
        raise DatasetError(f"exclude / --exclude: dataset {ds.root} has no column and no computed feature named {hints}")
    if settings.kmer_sizes:
        present = sorted({kmer_size(c) for c in ds.columns if is_kmer(c)})
        missing = [k for k in settings.kmer_sizes if k not in present]
        if missing:
            raise DatasetError(f"kmer_sizes / --kmer-sizes: dataset {ds.root} has no {', '.join(map(str, missing))}-mer "
                               f"columns (its k-mer sizes: {', '.join(map(str, present)) or 'none'})")


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def screen_features(ds: ParquetDataset, genes: Sequence[str], settings: ScreeningSettings = ScreeningSettings(),
                    threads: int = 2) -> pa.Table:
    """Return the manifest table: column, dtype, family, is_feature, reason, stats, fill_value."""
    check_selection(ds, settings)
    rows: list[dict] = []
    candidates: list[str] = []
    context = gene_context_decision(settings.gene_context, read_declaration(ds.root))
    for name, typ in zip(ds.schema.names, ds.schema.types):
        fam = feature_family(name)
        reason = ""
        if name in LEAKAGE_COLUMNS:
            reason = "label leakage"
        elif name in GENE_LABEL_COUNT_COLUMNS:
            reason = "label leakage (the gene's annotated sites, counted: unknown for a gene being predicted)"
        elif name in LABEL_CHOSEN_TRACK_COLUMNS:
            reason = ("label leakage (a site row's context comes from its label's score track; "
                      "donor_*/acceptor_* hold both tracks)")
        elif name in NON_FEATURE_BY_DEFAULT and not settings.include_chrom:
            reason = "chromosome (leaks across instances; not a feature by default)"
        elif is_coordinate(name):
            reason = COORDINATE_REASON
        elif name in ID_COLUMNS:
            reason = "metadata / identifier"
        elif name in STRUCTURAL_LEAKAGE_COLUMNS and not settings.include_structural:
            reason = "structural leakage (back-filled for negatives; encodes the label)"
        elif name in settings.exclude:
            reason = "user exclusion"
        elif not _numeric(typ):
            reason = f"non-numeric ({typ})"
        elif is_kmer(name) and not kmer_size_selected(name, settings.kmer_sizes):
            reason = ("k-mer size not selected" if settings.kmer_sizes is not None else
                      f"k-mer size above {DEFAULT_MAX_KMER_SIZE} (the default; kmer_sizes / --kmer-sizes keeps it)")
        rows.append({"column": name, "dtype": str(typ), "family": fam, "reason": reason})
        if not reason:
            candidates.append(name)
    for on, computed, sources in ((settings.gene_position, GENE_POSITION_FEATURES, GENE_POSITION_SOURCES),
                                  (context.on, GENE_CONTEXT_FEATURES, GENE_CONTEXT_SOURCES)):
        if on and all(c in ds.columns and (c == GENE_COLUMN or _numeric(ds.schema.field(c).type)) for c in sources):
            rows += [{"column": name, "dtype": "double", "family": feature_family(name),
                      "reason": "user exclusion" if name in settings.exclude else ""}
                     for name in computed if name not in ds.columns]
    stats = _column_stats(ds, candidates, genes, settings, threads)
    stats.update(_computed_stats(ds, [r["column"] for r in rows if r["column"] not in ds.columns and not r["reason"]],
                                 genes, settings))
    for r in rows:
        s = stats.get(r["column"], {})
        r.update({k: s.get(k) for k in ("non_null", "nan_count", "inf_count", "min", "max", "mean", "label_corr")})
        if r["column"] in stats:
            if s["inf_count"]:
                files = ", ".join(s["inf_files"])
                raise DatasetError(f"column '{r['column']}' has {s['inf_count']} infinite value(s) (in {files})")
            if s["non_null"] == s["nan_count"] or s["min"] == s["max"]:
                r["reason"] = "constant"
            elif s["label_corr"] is not None and abs(s["label_corr"]) >= settings.correlation_threshold:
                r["reason"] = (f"label correlation |r|={abs(s['label_corr']):.3f} ≥ {settings.correlation_threshold} "
                               "on a gene sample (near-separates the classes)")
        r["is_feature"] = not r["reason"]
        r["fill_value"] = 0.0 if is_kmer(r["column"]) else float(r["mean"]) if r.get("mean") is not None else 0.0
    if not context.on:  # the gene-context features, not computed, with the reason
        rows += [{"column": name, "dtype": "double", "family": feature_family(name), "is_feature": False,
                  "reason": context.reason} for name in GENE_CONTEXT_FEATURES if name not in ds.columns]
    if not any(r["is_feature"] for r in rows):
        raise DatasetError(f"dataset {ds.root}: no usable feature column after screening")
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("column", pa.string()), ("dtype", pa.string()), ("family", pa.string()),
        ("is_feature", pa.bool_()), ("reason", pa.string()), ("non_null", pa.int64()),
        ("nan_count", pa.int64()), ("inf_count", pa.int64()), ("min", pa.float64()),
        ("max", pa.float64()), ("mean", pa.float64()), ("label_corr", pa.float64()),
        ("fill_value", pa.float64()),
    ]))


def _sample_genes(genes: Sequence[str], settings: ScreeningSettings) -> list[str]:
    """The genes the label-correlation screen reads: all, or ``sample_genes`` of them drawn with ``seed``."""
    genes = sorted(genes)
    if len(genes) <= settings.sample_genes:
        return genes
    return sorted(np.random.default_rng(settings.seed).choice(genes, size=settings.sample_genes, replace=False).tolist())


def _column_stats(ds: ParquetDataset, columns: list[str], genes: Sequence[str],
                  settings: ScreeningSettings, threads: int, chunk: int = 150) -> dict[str, dict]:
    if not columns:
        return {}
    sample = _sample_genes(genes, settings)
    con = connect(threads)
    con.register("sample_genes", pa.table({"gene_id": pa.array(sample, pa.string())}))
    out: dict[str, dict] = {}
    try:
        with read_errors(ds, [GENE_COLUMN, LABEL_COLUMN, *columns]):
            _stats_queries(con, ds, columns, settings, chunk, out, all_genes=len(sample) == len(set(genes)))
    finally:
        con.close()
    return out


def _computed_stats(ds: ParquetDataset, names: list[str], genes: Sequence[str],
                    settings: ScreeningSettings) -> dict[str, dict]:
    """The manifest statistics of computed features (``schema.GENE_POSITION_FEATURES``, ``GENE_CONTEXT_FEATURES``),
    computed as training computes them (``dataset.to_feature_matrix``), on the whole genes of the gene sample."""
    if not names:
        return {}
    import pyarrow.dataset as pads

    cols = [GENE_COLUMN, LABEL_COLUMN, *(c for c in source_columns(names) if c not in (GENE_COLUMN, LABEL_COLUMN))]
    with read_errors(ds, cols):
        t = pads.dataset(ds.file_strings, schema=ds.schema, format="parquet").to_table(
            columns=cols, filter=pads.field(GENE_COLUMN).isin(pa.array(_sample_genes(genes, settings), pa.string())))
    X = to_feature_matrix(t, names, {n: np.nan for n in names}, f"dataset {ds.root}").astype(np.float64)
    is_splice = label_codes(t.column(LABEL_COLUMN)) > 0
    out: dict[str, dict] = {}
    for j, name in enumerate(names):
        v = X[:, j]
        ok = np.isfinite(v)  # missing sources (NaN) are filled like a missing value
        out[name] = {"non_null": int(ok.sum()), "nan_count": 0, "inf_count": 0,
                     "min": float(v[ok].min()) if ok.any() else None, "max": float(v[ok].max()) if ok.any() else None,
                     "mean": exact_mean(v[ok]), "label_corr": exact_label_correlation(v[ok], is_splice[ok]),
                     "inf_files": []}
    return out


def _stats_queries(con, ds: ParquetDataset, columns: list[str], settings: ScreeningSettings, chunk: int,
                   out: dict[str, dict], all_genes: bool) -> None:
    """Two scans per chunk of columns. The first: counts, min and max (exact in any order). The
    second: exact fixed-point sums (``exact_stats``) per (gene sample?, splice site?) group, from
    which the mean over all rows and the label correlation over the gene sample are made — the
    same numbers on every run, whatever the threads."""
    p = {"files": ds.file_strings}
    src = _source(ds)
    fcol, smp, pos = (_quote(internal_name(ds, n)) for n in ("file", "sample", "splice"))
    in_sample = "TRUE" if all_genes else f"{_quote(GENE_COLUMN)} IN (SELECT gene_id FROM sample_genes)"
    for i in range(0, len(columns), chunk):
        part = columns[i:i + chunk]
        finite = {c: f"CASE WHEN isfinite(CAST({_quote(c)} AS DOUBLE)) THEN CAST({_quote(c)} AS DOUBLE) END"
                  for c in part}
        aggs = []
        for c in part:
            d = f"CAST({_quote(c)} AS DOUBLE)"
            aggs += [f"count({d})", f"count_if(isnan({d}))", f"count_if(isinf({d}))", f"min({finite[c]})",
                     f"max({finite[c]})"]
        vals = con.sql(f"SELECT {', '.join(aggs)} FROM {src}", params=p).fetchall()[0]
        finite_cols, scaled, sums, scales = [], [], [], {}
        for j, c in enumerate(part):
            nn, nan, inf, mn, mx = vals[5 * j:5 * j + 5]
            out[c] = {"non_null": int(nn), "nan_count": int(nan), "inf_count": int(inf), "min": mn, "max": mx,
                      "mean": None, "label_corr": None, "inf_files": []}
            if mn is None:
                continue   # no finite value: no mean, no correlation
            bound = max(abs(mn), abs(mx))
            k_mean = scale_exponent(bound, MEAN_BITS) if bound else 0
            center, half = center_and_bound(mn, mx)
            k_corr = scale_exponent(half, CORRELATION_BITS) if half else 0
            f, m, q = (_quote(internal_name(ds, f"{n}{j}")) for n in ("f", "m", "q"))
            finite_cols.append(f"{finite[c]} AS {f}")
            scaled += [f"{fixed_point_sql(f, k_mean)} AS {m}", f"{fixed_point_sql(f, k_corr, center)} AS {q}"]
            sums += [f"sum({m})", f"count({q})", f"sum({q})", f"sum({q} * {q})"]
            scales[c] = (k_mean, len(scales))
        if scales:
            groups = con.sql(
                f"SELECT {smp}, {pos}, {', '.join(sums)} FROM (SELECT {', '.join(scaled)}, {smp}, {pos} FROM "
                f"(SELECT {', '.join(finite_cols)}, {in_sample} AS {smp}, ({LABEL_SQL}) > 0 AS {pos} FROM {src})) "
                "GROUP BY ALL", params=p).fetchall()
            for c, (k_mean, j) in scales.items():
                _exact_mean_and_correlation(out[c], groups, k_mean, j)
        for c in part:
            if out[c]["inf_count"]:
                out[c]["inf_files"] = [r[0] for r in con.sql(
                    f"SELECT DISTINCT {fcol} FROM {src} WHERE isinf(CAST({_quote(c)} AS DOUBLE)) ORDER BY 1",
                    params=p).fetchall()]


def _exact_mean_and_correlation(stats: dict, groups: list[tuple], k_mean: int, j: int) -> None:
    """The mean over all rows and the label correlation over the gene sample of column ``j`` from its
    exact sums in each (in sample, splice site) group: integers, so their order does not matter."""
    total, n, s, ss, n_pos, s_pos = 0, 0, 0, 0, 0, 0
    for in_sample, positive, *sums in groups:
        m, cnt, q, qq = (int(v or 0) for v in sums[4 * j:4 * j + 4])
        total += m
        if in_sample:
            n, s, ss = n + cnt, s + q, ss + qq
            if positive:
                n_pos, s_pos = n_pos + cnt, s_pos + q
    stats["mean"] = mean_from_sum(total, stats["non_null"] - stats["nan_count"] - stats["inf_count"], k_mean)
    stats["label_corr"] = correlation_from_sums(n, s, ss, n_pos, s_pos)


def feature_columns(manifest: pa.Table) -> tuple[list[str], dict[str, float]]:
    """Feature names (in manifest order) and their fill values."""
    d = manifest.to_pydict()
    names = [c for c, f in zip(d["column"], d["is_feature"]) if f]
    fill = {c: v for c, v, f in zip(d["column"], d["fill_value"], d["is_feature"]) if f}
    return names, fill
