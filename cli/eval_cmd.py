"""`rag eval`: retrieval benchmark on a BEIR-layout collection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.common import common_options, emit_json, progress_bar
from rag.settings import Settings

MODES = ["hybrid", "sparse", "dense", "graph"]


@click.command("eval")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--modes",
    default="sparse,dense,hybrid",
    show_default=True,
    help="Comma-separated modes to compare (sparse, dense, hybrid, graph).",
)
@click.option(
    "--k", "ks", multiple=True, type=click.IntRange(1, 1000), help="Extra cut-offs (10 and 100 always)."
)
@click.option(
    "--fail-under",
    multiple=True,
    metavar="METRIC=VALUE",
    help="Exit 1 when the best mode's metric is below VALUE, e.g. ndcg@10=0.6 (repeatable).",
)
@common_options
def eval_cmd(
    dataset_dir: Path,
    modes: str,
    ks: tuple[int, ...],
    fail_under: tuple[str, ...],
    settings: Settings,
    as_json: bool,
) -> None:
    """Benchmark retrieval on a BEIR-layout collection and compare the legs.

    \b
    DATASET_DIR holds corpus.jsonl, queries.jsonl and qrels/test.tsv. The corpus
    is indexed in a temporary data dir unless --data-dir is given (then it is
    kept and reused). Metrics: nDCG@10, Recall@10, Recall@100, MRR@10 and
    per-query latency p50/p95 for each mode.

    \b
    Examples:
      rag eval ../shared/eval/covidqa_chunks_en
      rag eval ./my_beir_set --modes sparse,hybrid --json --fail-under ndcg@10=0.6
    """
    import tempfile

    from click.core import ParameterSource

    from eval.beir import load_beir
    from eval.runner import evaluate
    from rag.errors import InputError

    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    for m in mode_list:
        if m not in MODES:
            raise InputError(f"unknown mode {m!r}", hint="choose from " + ", ".join(MODES))
    bars = []
    for spec in fail_under:
        metric, _, value = spec.partition("=")
        try:
            bars.append((metric.strip(), float(value)))
        except ValueError:
            raise InputError(f"--fail-under wants METRIC=VALUE, got {spec!r}") from None
    ds = load_beir(dataset_dir)
    ctx = click.get_current_context()
    temp = None
    if ctx.get_parameter_source("data_dir") in (ParameterSource.DEFAULT, None):
        temp = tempfile.TemporaryDirectory(prefix="rag-eval-")
        settings.data_dir = Path(temp.name)
    try:
        with progress_bar(enabled=not as_json, label="indexing corpus") as progress:
            result = evaluate(ds, settings, mode_list, ks=sorted({10, 100, *ks}), progress=progress)  # type: ignore[arg-type]
    finally:
        if temp is not None:
            temp.cleanup()
    failed = []
    for metric, bar in bars:
        best = max((r.get(metric, float("-inf")) for r in result["modes"].values()), default=float("-inf"))
        if best < bar:
            failed.append(f"{metric} {best:.4f} < {bar}")
    if as_json:
        emit_json(result)
    else:
        _print_eval(result)
    if failed:
        click.echo("error: below the bar: " + "; ".join(failed), err=True)
        ctx.exit(1)


def _print_eval(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    metrics = [
        k for k in next(iter(result["modes"].values()), {}) if "@" in k and not k.startswith("latency")
    ]
    cols = [m for m in ("ndcg@10", "recall@10", "recall@100", "mrr@10") if m in metrics]
    table = Table(
        "mode",
        *cols,
        "p50 ms",
        "p95 ms",
        title=f"{result['dataset']}: {result['n_queries']} queries, {result['n_corpus']} docs",
    )
    for mode, r in result["modes"].items():
        table.add_row(
            mode, *(f"{r[c]:.4f}" for c in cols), f"{r['latency_ms_p50']:.1f}", f"{r['latency_ms_p95']:.1f}"
        )
    Console().print(table)
    Console().print(f"[dim]indexing took {result['index_s']:.1f} s[/]")
