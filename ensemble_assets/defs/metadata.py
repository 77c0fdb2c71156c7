"""Small helpers that turn core results into Dagster metadata."""


from pathlib import Path
from typing import Any

import dagster as dg

from ensemble_assets.core.evaluation.plots import png_data_uri

OWNERS = ["team:splice-ml"]


def md_table(rows: list[dict[str, Any]], columns: list[str]) -> dg.MetadataValue:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |\n" for r in rows)
    return dg.MetadataValue.md(head + body)


def metric_meta(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    keys = ("macro_f1", "macro_ap", "f1_donor", "f1_acceptor", "splice_f1", "splice_ap",
            "base_splice_f1", "base_splice_ap", "delta_fp", "delta_fn", "topk_splice")
    return {f"{prefix}{k}": dg.MetadataValue.float(float(metrics[k])) if isinstance(metrics.get(k), float)
            else metrics[k] for k in keys if metrics.get(k) is not None}


def md_image(path: str | Path, title: str) -> dg.MetadataValue:
    """A PNG shown inline in the Dagster UI (Markdown with a data URI), with its file path beneath."""
    return dg.MetadataValue.md(f"![{title}]({png_data_uri(path)})\n\n`{path}`")


def per_key_result(problems: dict[str, str], ok: str, metadata: dict, count_name: str) -> dg.AssetCheckResult:
    """A check over keys (subsets, instances): fails naming each key with its problems (non-empty
    text), else passes with ``ok``; ``count_name`` in the metadata counts the failing keys."""
    bad = {k: v for k, v in problems.items() if v}
    return dg.AssetCheckResult(
        passed=not bad,
        description="; ".join(f"{k}: {v}" for k, v in bad.items()) if bad else ok,
        metadata={**metadata, count_name: len(bad)})
