"""The benchmark report: renders the saved results of ``python -m benchmarks.instance`` into Markdown
(a section per command that has been run, each with its command and machine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ensemble_assets.core.planning.plan import GIB


def _gib(b: float | None) -> str:
    return "–" if b is None else f"{b / GIB:.2f} GiB"


def load_result(root: Path, name: str) -> dict[str, Any] | None:
    f = root / "results" / f"{name}.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _machine_line(r: dict[str, Any]) -> str:
    m = r["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB ({m['available_gib']} GiB available at start)"
            f"{gpu}; Python {m['python']}, XGBoost {m['xgboost']}; measured {r['measured_at']}")


def render(root: Path) -> str:
    """BENCHMARKS.md from the saved results (a section per command that has been run)."""
    lines = ["# Benchmarks", "",
             "Produced by `python -m benchmarks.instance <command>` (`benchmarks/instance.py`): every ratio's two "
             "sides are measured in the same run, on the machine named under it. Budgets: docs/benchmarks.md. "
             "Figures marked *extrapolated* are computed, not measured.", ""]
    data = load_result(root, "data")
    if data:
        s = data["spec"]
        lines += ["## Dataset", "",
                  f"`DemoSpec(n_genes={s['n_genes']}, rows_per_gene={s['rows_per_gene']})`: {data['rows']:,} rows, "
                  f"{data['columns']} columns ({data['features']} features after screening), {data['files']} Parquet "
                  f"files, {data['disk_bytes'] / 2**20:,.0f} MiB on disk."]
        if data.get("generation_seconds"):
            lines[-1] += f" Generated in {data['generation_seconds']:.0f} s with {data['generation_workers']} worker(s)."
        if data.get("pred_type_counts"):
            tot = sum(data["pred_type_counts"].values())
            mix = ", ".join(f"{k} {100 * v / tot:.1f}%" for k, v in data["pred_type_counts"].items())
            lines += ["", f"Base-model outcome mix: {mix} (reference: TN 89.5%, TP 7.2%, FN 2.5%, FP 0.8%)."]
        p = data["plan"]
        lines += ["", f"Plan: {p['strategy']}, {p['instances']} instances of ≤{p['genes_per_instance']} genes "
                      f"({min(p['rows_per_instance']):,}–{max(p['rows_per_instance']):,} rows each), "
                      f"{p['holdout_genes']} holdout genes.", "",
                  f"Command: `{data['command']}`  ", f"Machine: {_machine_line(data)}", ""]
    inst = load_result(root, "instance")
    if inst:
        t = inst["instance"]["timings"]
        lines += ["## One instance: memory and platform overhead", "",
                  f"{inst['genes']:,} genes, {inst['rows']:,} rows × {inst['features']} features; "
                  f"{inst['settings']['n_folds']}-fold CV × 3 classes + 3 final boosters "
                  f"(capped at {inst['settings']['n_estimators']} rounds each, see the notes), "
                  f"batches of {inst['settings']['batch_rows']:,} rows, nthread={inst['settings']['nthread']}.",
                  "", "| figure | measured | budget | met |", "|---|---|---|---|",
                  f"| quantized matrix (RSS growth of a fresh process building it) | {_gib(inst['matrix_bytes'])} "
                  f"({inst['matrix']['bytes_per_cell_measured']} B/cell) | – | – |",
                  f"| plan's estimate (matrix + side arrays) / measured | {inst['estimate_over_measured']} × | 0.75–1.25 × | "
                  f"{'yes' if 0.75 <= inst['estimate_over_measured'] <= 1.25 else 'no'} |",
                  f"| peak RSS of the instance (fresh process) | {_gib(inst['peak_rss_bytes'])} = "
                  f"{inst['peak_rss_over_matrix']} × matrix | ≤ 1.3 × + 0.5 GiB = {_gib(inst['peak_rss_budget_bytes'])} | "
                  f"{'yes' if inst['peak_rss_within_budget'] else 'no'} |",
                  f"| instance wall time / its xgboost.train calls | {inst['instance']['wall_seconds']:.0f} s / "
                  f"{t['xgboost_train_seconds']:.0f} s = {inst['wall_over_xgboost_train']} × | ≤ 1.15 × | "
                  f"{'yes' if inst['wall_over_xgboost_train'] <= 1.15 else 'no'} |",
                  "", f"Load (Parquet read {t.get('parquet_passes', '?')}× for XGBoost's 4 passes): "
                      f"{t['load_seconds']:.0f} s; trees: {inst['instance']['n_estimators']}; out-of-fold macro F1 "
                      f"{inst['instance']['oof_macro_f1']:.4f} (genes each fold model did not train on). "
                      "MetaSpliceAI: 12–15 GB per 1,500-gene instance.", "",
                  f"Command: `{inst['command']}`  ", f"Machine: {_machine_line(inst)}", ""]
        lp = load_result(root, "load_peak")
        if lp:
            lines += [f"Loading peak of the same instance by streamed batch size (fresh process each; in the first "
                      f"instance run the peak was reached while loading; `{lp['command']}`, measured "
                      f"{lp['measured_at']}):", "", "| batch rows | quantized matrix | peak RSS while loading | "
                      "budget 1.3 × + 0.5 GiB | met |", "|---|---|---|---|---|"]
            lines += [f"| {r['batch_rows']:,} | {_gib(r['matrix_bytes_measured'])} | {_gib(r['peak_rss_after_load_bytes'])} "
                      f"| {_gib(r['budget_bytes'])} | {'yes' if r['peak_over_budget'] <= 1 else 'no'} |" for r in lp["runs"]]
            lines += [""]
        first = load_result(root, "instance_batch32768")
        if first:
            lines += [f"First run, the same instance with the foundation's 32,768-row batches: peak RSS "
                      f"{_gib(first['peak_rss_bytes'])} = {first['peak_rss_over_matrix']} × matrix "
                      f"({_gib(first['matrix_bytes'])}) against a budget of {_gib(first['peak_rss_budget_bytes'])}: "
                      f"{'met' if first['peak_rss_within_budget'] else 'NOT met'}; wall / xgboost.train "
                      f"{first['wall_over_xgboost_train']} × ({first['instance']['wall_seconds']:.0f} s / "
                      f"{first['instance']['timings']['xgboost_train_seconds']:.0f} s); measured {first['measured_at']}.", ""]
    sc = load_result(root, "scaling")
    if sc:
        lines += ["## Scaling: 1k genes to every gene", "", sc["scope"] + ".", "",
                  "| genes | rows | matrix measured | plan's estimate | matrix build | s / round | peak RSS |",
                  "|---|---|---|---|---|---|---|"]
        for p in sc["points"]:
            if "refused" in p:
                lines.append(f"| {p['genes']:,} | {p['rows']:,} | refused by the memory guard: {p['refused']} | | | | |")
                continue
            lines.append(f"| {p['genes']:,} | {p['rows']:,} | {_gib(p['matrix_bytes_measured'])} | "
                         f"{_gib(p['matrix_bytes_estimated'])} | {p['load_seconds']:.0f} s | {p['seconds_per_round']:.2f} | "
                         f"{_gib(p['peak_rss_bytes'])} |")
        full = max((p for p in sc["points"] if "peak_rss_bytes" in p), key=lambda p: p["genes"], default=None)
        if full:
            lines += ["", f"One model on all {full['genes']:,} genes: peak RSS {_gib(full['peak_rss_bytes'])} "
                          f"(budget ≤ 12 GB: {'met' if full['peak_rss_bytes'] <= 12e9 else 'NOT met'}; MetaSpliceAI: "
                          "out of memory above 64 GB)."]
        md, plot = report_paths(root)
        if plot.is_file():
            lines += ["", f"![scaling]({plot.relative_to(md.parent)})"]
        lines += ["", f"Command: `{sc['command']}`  ", f"Machine: {_machine_line(sc)}", ""]
    inf = load_result(root, "inference")
    if inf:
        lines += ["## Inference", "",
                  f"Consolidated model of {inf['instances']} instance(s), {inf['trees']:,} trees, {inf['features']} "
                  f"features (from `{inf['model_source']}`); {inf['rows']:,} rows, nthread={inf['threads']}.", "",
                  "| path | row·trees / s | vs a single booster with the same trees |", "|---|---|---|",
                  f"| single booster `inplace_predict` (yardstick) | {inf['single_booster_row_trees_per_s']:.3g} | 1 |",
                  f"| consolidated `predict_proba`, merged booster (numpy input) | {inf['merged_row_trees_per_s']:.3g} | "
                  f"{inf['merged_over_single']} × (budget ≥ 0.8 ×: {'met' if inf['merged_over_single'] >= 0.8 else 'NOT met'}) |",
                  f"| consolidated, per-instance calls (reference semantics) | {inf['per_instance_row_trees_per_s']:.3g} | "
                  f"{inf['per_instance_over_single']} × |",
                  f"| consolidated, Arrow table input (alignment by name included) | {inf['arrow_table_row_trees_per_s']:.3g} | "
                  f"{inf['arrow_table_over_single']} × |", "",
                  f"Model directory {inf['model_dir_bytes'] / 2**20:.1f} MiB (model files {inf['model_files_bytes'] / 2**20:.1f} "
                  f"MiB, merged booster {inf['merged_booster_bytes'] / 2**20:.1f} MiB); load_model (checksums + merged "
                  f"booster) {inf['load_seconds']:.2f} s. MetaSpliceAI: 1.4–2.8 GB, 5–10 s.", "",
                  f"Command: `{inf['command']}`  ", f"Machine: {_machine_line(inf)}", ""]
    gpu = load_result(root, "gpu")
    if gpu:
        ts = gpu["timings_seconds"]
        lines += ["## The full ensemble on one GPU", "",
                  f"{gpu['spec']['n_genes']:,} genes, {gpu['rows']:,} rows, {gpu['features']} features → "
                  f"{gpu['instances']} instances of ≤{gpu['genes_per_instance']} genes, {gpu['total_trees']:,} trees, "
                  f"device `{gpu['device']}`, {gpu['parallel']} instance processes at a time.", "",
                  "| step | seconds |", "|---|---|"]
        lines += [f"| {k.replace('_', ' ')} | {v:.0f} |" for k, v in ts.items()]
        lines += [f"| **plan → consolidated model** | **{gpu['plan_to_consolidated_seconds']:.0f}** |",
                  f"| generate → consolidated model | {gpu['generate_to_consolidated_seconds']:.0f} |",
                  f"| end to end, holdout scoring included | {gpu['end_to_end_seconds']:.0f} |", "",
                  f"Goal ≤ 15 minutes for the full ensemble: {'met' if gpu['generate_to_consolidated_seconds'] <= 900 else 'NOT met'} "
                  "(MetaSpliceAI: 8–12 hours). The generated rows matched the carried inventory gene by gene: "
                  f"{'yes' if gpu.get('inventory_matches') else 'NO'}.", "",
                  "| instance | genes | rows | load s | xgboost.train s | instance s | instance / train | trees | "
                  "out-of-fold macro F1 | peak RSS |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in gpu["per_instance"]:
            t = r["timings"]
            lines.append(f"| {r['key']} | {r['n_genes']:,} | {r['n_rows']:,} | {t['load_seconds']:.0f} | "
                         f"{t['xgboost_train_seconds']:.0f} | {r['wall_seconds']:.0f} | "
                         f"{r['wall_seconds'] / t['xgboost_train_seconds']:.2f} | {sum(r['n_estimators'].values())} | "
                         f"{r['oof_macro_f1']:.4f} | {_gib(r['peak_rss_bytes'])} |")
        hm = gpu["holdout_metrics"]
        lines += ["", f"Consolidated model ({gpu['total_trees']:,} trees, merged booster: "
                      f"{'yes' if gpu['merged_booster'] else 'no'}) on {hm['scope']}: macro F1 {hm['macro_f1']:.4f}, "
                      f"splice F1 {hm['splice_f1']:.4f} (base model {hm.get('base_splice_f1') or float('nan'):.4f}), "
                      f"macro AP {hm['macro_ap']:.4f}.",
                  "", f"Command: `{gpu['command']}` (the device script: `scripts/gpu_full_ensemble.sh`)  ",
                  f"Machine: {_machine_line(gpu)}", ""]
    return "\n".join(lines)


def report_paths(root: Path) -> tuple[Path, Path]:
    """The rendered report and the scaling plot, under the results root."""
    return Path(root) / "BENCHMARKS.md", Path(root) / "scaling.png"
