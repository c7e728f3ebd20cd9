"""Benchmark reports: the :func:`eval.runner.evaluate` object as JSON, a markdown table and a bar chart.

``write_report(result, out_dir)`` writes ``results.json`` (the object as it
is: metrics, slices, config, timings, machine), ``results.md`` (a table per
query set: every mode with nDCG@10, Recall@10, Recall@100, MRR@10, answer
recall when measured, latency p50/p95) and ``results.png`` (nDCG@10 and
Recall@100 per mode; matplotlib is needed for that file only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rag.errors import DependencyMissingError, InputError

__all__ = ["CHART_METRICS", "TABLE_METRICS", "markdown_report", "plot_chart", "write_report"]

TABLE_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
CHART_METRICS = ("ndcg@10", "recall@100")
_LABELS = {
    "ndcg@10": "nDCG@10",
    "recall@10": "Recall@10",
    "recall@100": "Recall@100",
    "mrr@10": "MRR@10",
}


def _label(metric: str) -> str:
    if metric in _LABELS:
        return _LABELS[metric]
    name, _, k = metric.partition("@")
    return {"answer_recall": f"AnsRecall@{k}"}.get(name, metric)


def _columns(rows: Mapping[str, Mapping[str, float]]) -> list[str]:
    present = {m for r in rows.values() for m in r}
    answer = sorted(
        (m for m in present if m.startswith("answer_recall@")), key=lambda m: int(m.partition("@")[2])
    )
    return [m for m in TABLE_METRICS if m in present] + answer


def _table(rows: Mapping[str, Mapping[str, float]], *, with_count: bool = False) -> list[str]:
    cols = _columns(rows)
    head = ["mode", *(_label(c) for c in cols), "p50 ms", "p95 ms"]
    if with_count:
        head.insert(1, "queries")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for mode, r in rows.items():
        cells = [mode, *(f"{r[c]:.4f}" if c in r else "–" for c in cols)]
        cells += [f"{r.get('latency_ms_p50', 0.0):.1f}", f"{r.get('latency_ms_p95', 0.0):.1f}"]
        if with_count:
            cells.insert(1, str(int(r.get("n_queries", 0))))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown_report(result: Mapping[str, Any]) -> str:
    """The result as markdown: a heading, a line of facts, one table for all queries and one per slice."""
    cfg = result.get("config", {})
    emb = cfg.get("settings", {}).get("embedding", {}).get("model", "?")
    timings = result.get("timings", {})
    lines = [
        f"# Retrieval benchmark: {result['dataset']}",
        "",
        f"{result['n_queries']} queries, {result['n_corpus']} corpus entries; "
        f"indexing took {result['index_s']:.1f} s; embedding model `{emb}`.",
        "",
        "## All queries",
        "",
        *_table(result["modes"]),
    ]
    for lang, rows in result.get("slices", {}).items():
        lines += ["", f"## Queries in {lang}", "", *_table(rows, with_count=True)]
    gen = result.get("generation")
    if gen:
        llm = gen.get("llm", {})
        cite = gen.get("citation_accuracy")
        lines += [
            "",
            "## Generated answers",
            "",
            f"{gen['n_queries']} queries answered by `{llm.get('model', '?')}` ({llm.get('backend', '?')}), "
            f"{gen.get('mode', 'hybrid')} retrieval.",
            "",
            "| exact match | F1 | citation accuracy | p50 ms | p95 ms |",
            "|---:|---:|---:|---:|---:|",
            f"| {gen['exact_match']:.4f} | {gen['f1']:.4f} | {'–' if cite is None else f'{cite:.4f}'} "
            f"| {gen['latency_ms_p50']:.1f} | {gen['latency_ms_p95']:.1f} |",
        ]
    lines += ["", "## Timings", ""]
    if "sync_s" in timings:
        lines.append(
            "- index build per leg: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings["sync_s"].items())
        )
    if "search_s" in timings:
        lines.append(
            "- all queries per mode: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings["search_s"].items())
        )
    if "total_s" in timings:
        lines.append(f"- total: {timings['total_s']:.1f} s")
    machine = result.get("machine")
    if machine:
        lines += [
            "",
            f"Measured on {machine.get('platform')}, {machine.get('cpu_count')} CPUs, "
            f"Python {machine.get('python')}"
            + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
            + ".",
        ]
    settings = cfg.get("settings")
    if settings:
        lines += ["", "Settings:", "", "```json", json.dumps(settings, indent=2, ensure_ascii=False), "```"]
    return "\n".join(lines) + "\n"


def plot_chart(result: Mapping[str, Any], path: Path) -> Path:
    """A PNG bar chart of nDCG@10 and Recall@100 per mode: one panel for all queries, one per slice."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise DependencyMissingError(
            "matplotlib is needed for the chart", hint="pip install matplotlib, or leave out --out"
        ) from exc
    import warnings

    with warnings.catch_warnings():
        # a dataset or mode name in a script the default font lacks draws as boxes; that is no error
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        panels: list[tuple[str, Mapping[str, Mapping[str, float]]]] = [("all queries", result["modes"])]
        panels += [(f"{lang} queries", rows) for lang, rows in result.get("slices", {}).items()]
        n_modes = max(len(rows) for _, rows in panels)
        fig = Figure(figsize=(max(4.0, 1.2 + 1.3 * n_modes) * len(panels), 4.0), dpi=100)
        FigureCanvasAgg(fig)  # the Agg canvas: no display, no global pyplot state
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        width = 0.38
        for ax, (title, rows) in zip(axes, panels, strict=True):
            modes = list(rows)
            for j, metric in enumerate(CHART_METRICS):
                xs = [i + (j - 0.5) * width for i in range(len(modes))]
                values = [float(rows[m].get(metric, 0.0)) for m in modes]
                bars = ax.bar(xs, values, width, label=_label(metric))
                ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=7, padding=2)
            ax.set_xticks(range(len(modes)), modes)
            ax.set_xlim(-0.75, len(modes) - 0.25)
            ax.set_ylim(0, 1.1)
            ax.set_title(title, fontsize=10)
            ax.grid(axis="y", alpha=0.3)
        axes[0].set_ylabel("score")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncols=len(CHART_METRICS), fontsize=8, frameon=False)
        fig.suptitle(f"{result['dataset']}: {result['n_queries']} queries", fontsize=11)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        fig.savefig(path, format="png")
    return path


def write_report(result: Mapping[str, Any], out_dir: Path, *, chart: bool = True) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and (``chart``) ``results.png`` into ``out_dir``."""
    if not result.get("modes"):
        raise InputError("the result has no modes to report")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    paths["json"].write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown_report(result), encoding="utf-8")
    if chart:
        paths["chart"] = plot_chart(result, out_dir / "results.png")
    return paths
