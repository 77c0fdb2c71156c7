"""Stream a target dataset through a trained model: whole-gene batches from Parquet (only the
columns the model reads, the ids, the base scores and the label where present), one prediction
per batch, the scored rows appended to one Parquet file that appears atomically when complete.
Memory is bounded by the batch size (and the largest gene), not by the input's size."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ensemble_assets.core.data.contract import DatasetError, ParquetDataset, open_dataset
from ensemble_assets.core.data.declaration import candidate_rows, read_declaration
from ensemble_assets.core.data.features import source_columns
from ensemble_assets.core.data.gene_batches import GeneLayout, iter_gene_batches
from ensemble_assets.core.data.schema import CLASSES, GENE_COLUMN, GENE_CONTEXT_FEATURES, LABEL_COLUMN, is_kmer
from ensemble_assets.core.data.streaming import checked_labels, row_columns
from ensemble_assets.core.io import atomic_path
from ensemble_assets.core.model.ensemble import align_features
from ensemble_assets.core.planning.capacity import peak_rss_bytes
from ensemble_assets.core.scoring.calls import ID_COLUMNS, REQUIRED_ID_COLUMNS, output_schema, scored_table
from ensemble_assets.core.scoring.settings import DEFAULT_BATCH_ROWS, DEFAULT_MEMORY_LIMIT

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    rows: int
    total_rows: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.rows_per_s
        return (self.total_rows - self.rows) / rate if rate > 0 else None

    def line(self) -> str:
        eta = self.eta_s
        return (f"{self.rows:,}/{self.total_rows:,} rows ({self.rows / max(self.total_rows, 1):.0%}), "
                f"{self.rows_per_s:,.0f} rows/s" + (f", ETA {eta:.0f} s" if eta is not None else ""))


def every(seconds: float, report: Callable[[Progress], None]) -> Callable[[Progress], None]:
    """A progress callback that passes on at most one report per ``seconds``, and the last one."""
    last = [float("-inf")]

    def callback(p: Progress) -> None:
        if p.seconds - last[0] >= seconds or p.rows >= p.total_rows:
            last[0] = p.seconds
            report(p)
    return callback


@dataclass
class LabelledRows:
    """What the target metrics need of a labelled target, compactly: per row the gene (index
    into ``genes``), the label code, the model's probabilities and the base scores."""

    genes: list[str] = field(default_factory=list)
    gene_code: list[np.ndarray] = field(default_factory=list)
    label: list[np.ndarray] = field(default_factory=list)
    proba: list[np.ndarray] = field(default_factory=list)
    base: list[np.ndarray] = field(default_factory=list)

    def add(self, gene_id: np.ndarray, label: np.ndarray, proba: np.ndarray, base: np.ndarray) -> None:
        names, inverse = np.unique(gene_id, return_inverse=True)
        self.gene_code.append((inverse + len(self.genes)).astype(np.int32))  # whole genes: new codes each batch
        self.genes.extend(str(g) for g in names)
        self.label.append(label.astype(np.int8))
        self.proba.append(proba.astype(np.float32))
        self.base.append(base.astype(np.float32))


@dataclass(frozen=True)
class GeneContextCheck:
    """Whether the target's declaration guarantees the rows the model's gene-context features are
    measured from (every position scoring ≥ CANDIDATE_MIN_SCORE). Without that guarantee the target
    is still scored, but a gene's missing candidates change those features, and the predictions
    may be worse than the model's measured quality: ``warning`` says so."""

    candidates_declared: bool
    reason: str

    @property
    def warning(self) -> str | None:
        if self.candidates_declared:
            return None
        return (f"the model reads gene-context features, but {self.reason}: where a candidate position is not a "
                "row, those features differ from what the model was trained on, and its predictions may be worse "
                "than its measured quality")

    def to_dict(self) -> dict[str, Any]:
        return {"candidates_declared": self.candidates_declared, "reason": self.reason, "warning": self.warning}


def gene_context_check(ds: ParquetDataset, features: list[str]) -> GeneContextCheck | None:
    """The declaration check of a target for a model with ``features`` (None: no gene context)."""
    if not any(f in GENE_CONTEXT_FEATURES for f in features):
        return None
    rows = candidate_rows(read_declaration(ds.root))
    return GeneContextCheck(rows.on, rows.reason)


@dataclass
class ScoringResult:
    output: Path
    rows: int
    genes: int
    scattered_genes: int
    seconds: float
    model_version: str
    threshold: float
    columns_read: list[str]
    calls: dict[str, int]                  # predicted_type → rows
    base_calls: dict[str, int] | None      # base_predicted_type → rows (None: no base scores)
    labelled: bool
    peak_rss_bytes: int                    # the process's peak resident memory so far
    gene_context: GeneContextCheck | None = None   # None: the model reads no gene-context feature
    labelled_rows: LabelledRows | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {"output": str(self.output), "rows": self.rows, "genes": self.genes,
                "scattered_genes": self.scattered_genes, "seconds": round(self.seconds, 3),
                "rows_per_s": round(self.rows_per_s, 1), "model_version": self.model_version,
                "threshold": self.threshold, "columns_read": self.columns_read, "calls": self.calls,
                "base_calls": self.base_calls, "labelled": self.labelled, "peak_rss_bytes": self.peak_rss_bytes,
                "gene_context": None if self.gene_context is None else self.gene_context.to_dict()}


def open_target(path: str | Path) -> ParquetDataset:
    """A target to score: a Parquet file, a directory of them, or a dataset in the layouts
    ``train`` accepts (``<dataset>/master/*.parquet``); labels are optional."""
    return open_dataset(path, required=REQUIRED_ID_COLUMNS)


def scoring_columns(ds: ParquetDataset, features: list[str]) -> list[str]:
    """The columns scoring reads: the model's feature sources, the ids, the base scores, the
    label where present. A non-k-mer source the target lacks is an error naming it."""
    missing = [c for c in source_columns(features) if c not in set(ds.columns) and not is_kmer(c)]
    if missing:
        raise DatasetError(f"target {ds.root} lacks {len(missing)} column(s) the model reads: {', '.join(missing[:20])}")
    return row_columns(ds, features, ids=tuple(ID_COLUMNS), label=LABEL_COLUMN in ds.columns)


def _counts(values: pa.ChunkedArray | pa.Array, into: dict[str, int]) -> None:
    for entry in values.value_counts().to_pylist():
        if entry["values"] is not None:
            into[entry["values"]] = into.get(entry["values"], 0) + entry["counts"]


def read_ahead(make: Callable[[], Iterator[T]], depth: int = 2) -> Iterator[T]:
    """The items of ``make()``, produced in a background thread up to ``depth`` items ahead, so
    that reading and preparing the next batch overlaps the prediction of this one (DuckDB,
    Arrow and XGBoost release the GIL). An exception of the producer is raised here; stopping
    early stops and closes the producer."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = make()
        try:
            for item in it:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put((None, exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="scoring-reader", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = items.get()
            if exc is not None:
                raise exc
            if item is end:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def score_dataset(model: Any, threshold: float, target: str | Path | ParquetDataset, output: str | Path,
                  model_version: str, batch_rows: int = DEFAULT_BATCH_ROWS,
                  memory_limit: str = DEFAULT_MEMORY_LIMIT, progress: Callable[[Progress], None] | None = None,
                  collect_labels: bool = False) -> ScoringResult:
    """Score every row of ``target`` with ``model`` (a loaded model, ``core.model.load_model``)
    and write the scored positions to ``output`` atomically.

    ``threshold``: the splice call is p_donor + p_acceptor ≥ threshold. ``collect_labels``: keep
    what the target metrics need when the target is labelled (``ScoringResult.labelled_rows``).
    A background thread reads the next whole-gene batch and builds its feature matrix while the
    model predicts the current one."""
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"splice threshold {threshold} is outside (0, 1]")
    start = time.perf_counter()
    ds = target if isinstance(target, ParquetDataset) else open_target(target)
    features = model.get_feature_names()
    columns = scoring_columns(ds, features)
    gene_context = gene_context_check(ds, features)
    labelled = LABEL_COLUMN in columns
    schema = output_schema(columns)
    source = f"target {ds.root}"
    layout: list[GeneLayout] = []
    done = 0
    calls: dict[str, int] = {}
    base_calls: dict[str, int] = {}
    rows = LabelledRows() if labelled and collect_labels else None

    def prepared() -> Iterator[tuple[pa.Table, np.ndarray, np.ndarray | None]]:
        for batch in iter_gene_batches(ds, columns, batch_rows, memory_limit, on_layout=layout.append):
            label = checked_labels(batch.column(LABEL_COLUMN), source) if labelled else None
            yield batch, align_features(batch, features, model.fill), label   # whole genes: exact features

    output = Path(output)
    with atomic_path(output) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch, X, label in read_ahead(prepared):
                proba = np.asarray(model.predict_proba(X), dtype=np.float64)
                out = scored_table(batch, proba, threshold, model_version, schema)
                writer.write_table(out)
                _counts(out.column("predicted_type"), calls)
                if "base_predicted_type" in schema.names:
                    _counts(out.column("base_predicted_type"), base_calls)
                if rows is not None:
                    base = np.column_stack([out.column(f"{c}_score").to_numpy(zero_copy_only=False)
                                            if f"{c}_score" in schema.names else np.full(len(out), np.nan)
                                            for c in CLASSES])
                    rows.add(np.asarray(batch.column(GENE_COLUMN).to_numpy(zero_copy_only=False), dtype=object),
                             label, proba, base)
                done += batch.num_rows
                if progress is not None:
                    progress(Progress(done, layout[0].rows, time.perf_counter() - start))
    return ScoringResult(
        output=output, rows=done, genes=layout[0].genes, scattered_genes=len(layout[0].scattered),
        seconds=time.perf_counter() - start, model_version=model_version, threshold=float(threshold),
        columns_read=columns, calls={c: calls.get(c, 0) for c in CLASSES},
        base_calls={c: base_calls.get(c, 0) for c in CLASSES} if "base_predicted_type" in schema.names else None,
        labelled=labelled, peak_rss_bytes=peak_rss_bytes(), gene_context=gene_context, labelled_rows=rows)
