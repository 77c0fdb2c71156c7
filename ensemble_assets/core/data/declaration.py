"""A dataset's declaration: ``dataset.json`` beside ``master/`` says where the data comes from and
how its rows were selected (docs/features.md#the-dataset-declaration).

The row selection decides whether the gene-context features are honest: they read the other rows
of a gene, so they need every position of the gene whose donor or acceptor score reaches
``schema.CANDIDATE_MIN_SCORE`` to be a row. ``gene_context_decision`` turns them on by default
exactly when the declaration guarantees that.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ensemble_assets.core.data.contract import DatasetError
from ensemble_assets.core.data.schema import CANDIDATE_MIN_SCORE

DECLARATION_NAME = "dataset.json"
# the score the row-selection threshold applies to (the one the gene-context features use)
MAX_SCORE = "max(donor_score, acceptor_score)"
_TEXT_KEYS = ("format", "name", "species", "assembly", "annotation", "base_model", "position")
_KEYS = (*_TEXT_KEYS, "chromosomes", "row_selection")
_ROW_SELECTION_KEYS = ("every_position_with_max_score_at_least", "max_score", "also")


@dataclass(frozen=True)
class RowSelection:
    """How the dataset's rows were chosen. ``every_position_with_max_score_at_least``: every
    position of a gene whose ``max_score`` reaches it is a row (None: no such guarantee)."""

    every_position_with_max_score_at_least: float | None = None
    max_score: str = MAX_SCORE
    also: tuple[str, ...] = ()   # the other rows, in words (sites, sampled negatives, ...)


@dataclass(frozen=True)
class DatasetDeclaration:
    path: str                    # the dataset.json it was read from
    format: str = ""
    name: str = ""
    species: str = ""
    assembly: str = ""
    chromosomes: tuple[str, ...] = ()
    annotation: str = ""
    base_model: str = ""
    position: str = ""
    row_selection: RowSelection | None = None

    @property
    def min_score_of_every_row(self) -> float | None:
        """The declared ``row_selection.every_position_with_max_score_at_least`` (None: not declared)."""
        return self.row_selection.every_position_with_max_score_at_least if self.row_selection else None

    def holds_every_position_scoring(self, score: float) -> bool:
        """True when every position of a gene whose max(donor, acceptor) score is ≥ ``score`` is a row."""
        t = self.min_score_of_every_row
        return t is not None and t <= score

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["chromosomes"] = list(self.chromosomes)
        if self.row_selection is not None:
            d["row_selection"]["also"] = list(self.row_selection.also)
        return d

    def row_selection_text(self) -> str:
        """The row selection in one line (for metadata and reports)."""
        rs = self.row_selection
        if rs is None:
            return "not declared"
        parts = []
        if rs.every_position_with_max_score_at_least is not None:
            parts.append(f"every position with {rs.max_score} ≥ {rs.every_position_with_max_score_at_least:g}")
        parts += list(rs.also)
        return "; ".join(parts) or "not declared"


def declaration_path(dataset: str | Path) -> Path:
    """Where a dataset's declaration lives: ``<dataset>/dataset.json`` (beside ``master/``); for a
    path to the ``master`` directory itself or to one Parquet file, beside that directory or file."""
    root = Path(dataset).expanduser()
    if root.is_file():
        root = root.parent
    if not (root / DECLARATION_NAME).is_file() and root.name == "master":
        return root.parent / DECLARATION_NAME
    return root / DECLARATION_NAME


def _fail(path: Path, key: str, problem: str) -> DatasetError:
    return DatasetError(f"{path}: key '{key}' {problem}")


def _text(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(path, key, f"must be a string, got {json.dumps(value)}")
    return value


def _texts(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(path, key, f"must be a list of non-empty strings, got {json.dumps(value)}")
    return tuple(value)


def _unknown(path: Path, where: str, got: dict, known: tuple[str, ...]) -> None:
    extra = sorted(set(got) - set(known))
    if extra:
        raise _fail(path, where + extra[0], f"is not a declaration key (known {where or 'top-level '}keys: "
                                            f"{', '.join(known)})")


def _row_selection(path: Path, value: Any) -> RowSelection:
    if not isinstance(value, dict):
        raise _fail(path, "row_selection", f"must be an object, got {json.dumps(value)}")
    _unknown(path, "row_selection.", value, _ROW_SELECTION_KEYS)
    key = "row_selection.every_position_with_max_score_at_least"
    t = value.get("every_position_with_max_score_at_least")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)
                          or not 0 <= t <= 1):
        raise _fail(path, key, f"must be a score in [0, 1], got {json.dumps(t)}")
    max_score = _text(path, "row_selection.max_score", value.get("max_score", MAX_SCORE))
    if max_score.replace(" ", "") != MAX_SCORE.replace(" ", ""):
        raise _fail(path, "row_selection.max_score", f"must be {MAX_SCORE!r} (the score the threshold applies "
                                                     f"to), got {max_score!r}")
    also = _texts(path, "row_selection.also", value.get("also", []))
    return RowSelection(None if t is None else float(t), MAX_SCORE, also)


def parse_declaration(path: Path, data: Any) -> DatasetDeclaration:
    """A declaration from parsed JSON; a bad key or value is a DatasetError naming the file and key."""
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: a dataset declaration must be a JSON object, got {type(data).__name__}")
    _unknown(path, "", data, _KEYS)
    fields: dict[str, Any] = {k: _text(path, k, data[k]) for k in _TEXT_KEYS if k in data}
    if "chromosomes" in data:
        fields["chromosomes"] = _texts(path, "chromosomes", data["chromosomes"])
    if "row_selection" in data:
        fields["row_selection"] = _row_selection(path, data["row_selection"])
    return DatasetDeclaration(path=str(path), **fields)


def read_declaration(dataset: str | Path) -> DatasetDeclaration | None:
    """The dataset's ``dataset.json``, validated; None when the dataset has none."""
    path = declaration_path(dataset)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    return parse_declaration(path, data)


def check_chromosomes(declaration: DatasetDeclaration | None, found: list[str]) -> None:
    """The chromosomes in the data must be among those the declaration lists (when it lists any)."""
    if declaration is None or not declaration.chromosomes:
        return
    undeclared = sorted(set(found) - set(declaration.chromosomes))
    if undeclared:
        raise DatasetError(f"{declaration.path}: key 'chromosomes' lists {', '.join(declaration.chromosomes)}, but "
                           f"the data's column 'chrom' also has {', '.join(undeclared[:10])}"
                           + (f" and {len(undeclared) - 10} more" if len(undeclared) > 10 else ""))


@dataclass(frozen=True)
class GeneContextDecision:
    on: bool
    reason: str       # why on or off, for the manifest and the feature_screening metadata


def candidate_rows(declaration: DatasetDeclaration | None) -> GeneContextDecision:
    """Whether ``declaration`` guarantees that every gene-context candidate (every position scoring
    ≥ CANDIDATE_MIN_SCORE) is a row — what makes the gene-context features of its rows exact — and why."""
    if declaration is None:
        return GeneContextDecision(False, f"the dataset has no {DECLARATION_NAME} declaring that every position "
                                          f"with {MAX_SCORE} ≥ {CANDIDATE_MIN_SCORE} is a row")
    t = declaration.min_score_of_every_row
    if t is None:
        return GeneContextDecision(False, f"{declaration.path} does not declare "
                                          "row_selection.every_position_with_max_score_at_least")
    if t > CANDIDATE_MIN_SCORE:
        return GeneContextDecision(False, f"{declaration.path} declares every position with {MAX_SCORE} ≥ {t:g} "
                                          f"as a row; the candidates need ≥ {CANDIDATE_MIN_SCORE}")
    return GeneContextDecision(True, f"{declaration.path} declares every position with {MAX_SCORE} ≥ {t:g} as a "
                                     f"row (candidates: ≥ {CANDIDATE_MIN_SCORE})")


def gene_context_decision(setting: bool | None, declaration: DatasetDeclaration | None) -> GeneContextDecision:
    """Whether to compute the gene-context features. An explicit ``setting`` wins; ``None`` follows
    the declaration: on exactly when it guarantees every position scoring ≥ CANDIDATE_MIN_SCORE is a row."""
    if setting is not None:
        return GeneContextDecision(bool(setting), f"gene context {'on' if setting else 'off'}: set explicitly "
                                                  "(gene_context / --gene-context / --no-gene-context)")
    rows = candidate_rows(declaration)
    return GeneContextDecision(rows.on, f"gene context {'on' if rows.on else 'off'}: {rows.reason}")
