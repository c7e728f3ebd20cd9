"""`rag eval`: retrieval benchmark on a BEIR-layout collection, and test collections from your own notes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.common import common_options, emit_json, progress_bar
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.llm import LLM

MODES = ["hybrid", "sparse", "dense", "graph"]
_BAR_RE = re.compile(r"^(ndcg|recall|mrr|answer_recall)@([1-9][0-9]*)$")


@click.command("eval")
@click.argument("dataset_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--modes",
    default=None,
    help="Comma-separated modes to compare (sparse, dense, hybrid, graph) [default: every available leg, "
    "plus hybrid when there are two or more].",
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
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write results.json, results.md and results.png (a chart) into this folder.",
)
@click.option("--no-slices", is_flag=True, help="Do not report Chinese and English queries separately.")
@click.option(
    "--max-answers",
    type=click.IntRange(0, 100_000),
    default=200,
    show_default=True,
    help="With answers.jsonl and a reachable LLM: questions to answer with it (0 = none).",
)
@click.option(
    "--generate",
    "generate_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Instead of evaluating: build a known-item test collection from the index in --data-dir.",
)
@click.option(
    "--n-queries",
    type=click.IntRange(1, 100_000),
    default=200,
    show_default=True,
    help="With --generate: number of queries.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="With --generate: sampling seed.")
@click.option(
    "--llm-questions",
    is_flag=True,
    help="With --generate: have the configured LLM write a question per picked chunk.",
)
@common_options
def eval_cmd(
    dataset_dir: Path | None,
    modes: str | None,
    ks: tuple[int, ...],
    fail_under: tuple[str, ...],
    out_dir: Path | None,
    no_slices: bool,
    max_answers: int,
    generate_dir: Path | None,
    n_queries: int,
    seed: int,
    llm_questions: bool,
    settings: Settings,
    as_json: bool,
) -> None:
    """Benchmark retrieval on a BEIR-layout collection and compare the legs.

    \b
    DATASET_DIR holds corpus.jsonl, queries.jsonl and qrels/test.tsv (and
    optionally answers.jsonl). The corpus is indexed in a temporary data dir
    unless --data-dir is given on the command line (then it is kept and
    reused). Metrics per mode: nDCG@10, Recall@10, Recall@100, MRR@10 and
    per-query latency p50/p95; with answers.jsonl also answer recall@1/5/10
    (a top-k chunk contains a gold answer) and, when an LLM is reachable,
    exact match/F1 of its answers and citation accuracy. Queries that mix
    Chinese and English are also reported per language.

    \b
    --generate OUT_DIR builds a test collection from your own ingested notes
    (the index in --data-dir / RAG_DATA_DIR): salient sentences become queries,
    each judged relevant to the chunk it came from and removed from that
    chunk's text. Then run `rag eval OUT_DIR` to compare settings and models.

    \b
    Examples:
      rag eval ../shared/eval/covidqa_chunks_en --out report/
      rag eval ./my_beir_set --modes sparse,hybrid --json --fail-under ndcg@10=0.6
      rag eval --generate ./my_notes_eval --n-queries 200 && rag eval ./my_notes_eval
    """
    from rag.errors import InputError

    if generate_dir is not None:
        if dataset_dir is not None:
            raise InputError("give DATASET_DIR or --generate OUT_DIR, not both")
        _generate(generate_dir, n_queries, seed, llm_questions, settings, as_json)
        return
    if dataset_dir is None:
        raise InputError("missing DATASET_DIR", hint="see `rag eval --help`")
    mode_list = _parse_modes(modes)
    bars = _parse_bars(fail_under)
    all_ks = sorted({10, 100, *ks, *(k for name, k, _ in bars if name != "answer_recall")})
    _run(dataset_dir, mode_list, all_ks, bars, out_dir, not no_slices, max_answers, settings, as_json)


def _parse_modes(modes: str | None) -> list[str] | None:
    from rag.errors import InputError

    if modes is None:
        return None
    mode_list = list(dict.fromkeys(m.strip() for m in modes.split(",") if m.strip()))
    if not mode_list:
        raise InputError("--modes names no mode", hint="e.g. --modes sparse,hybrid")
    for m in mode_list:
        if m not in MODES:
            raise InputError(f"unknown mode {m!r}", hint="choose from " + ", ".join(MODES))
    return mode_list


def _parse_bars(specs: tuple[str, ...]) -> list[tuple[str, int, float]]:
    """``ndcg@10=0.6`` -> ``("ndcg", 10, 0.6)``."""
    from rag.errors import InputError

    bars = []
    for spec in specs:
        metric, _, value = spec.partition("=")
        m = _BAR_RE.match(metric.strip().lower())
        try:
            bar = float(value)
        except ValueError:
            m = None
        if m is None:
            raise InputError(
                f"--fail-under wants METRIC=VALUE, got {spec!r}",
                hint="METRIC is ndcg@K, recall@K, mrr@K or answer_recall@K, e.g. ndcg@10=0.6",
            )
        bars.append((m.group(1), int(m.group(2)), bar))
    return bars


def _run(
    dataset_dir: Path,
    mode_list: list[str] | None,
    ks: list[int],
    bars: list[tuple[str, int, float]],
    out_dir: Path | None,
    slices: bool,
    max_answers: int,
    settings: Settings,
    as_json: bool,
) -> None:
    import tempfile

    from click.core import ParameterSource

    from eval.beir import load_beir
    from eval.runner import ANSWER_KS, evaluate
    from rag.errors import InputError

    ds = load_beir(dataset_dir)
    if not ds.answers and any(name == "answer_recall" for name, _, _ in bars):
        raise InputError(
            "--fail-under answer_recall@K needs gold answers", hint=f"no answers.jsonl in {dataset_dir}"
        )
    answer_ks = sorted({*ANSWER_KS, *(k for name, k, _ in bars if name == "answer_recall")})
    ctx = click.get_current_context()
    llm, llm_note = (None, "no answers.jsonl") if not ds.answers else _reachable_llm(settings, max_answers)
    temp = None
    # only a --data-dir on the command line keeps the index: RAG_DATA_DIR names the user's own index
    if ctx.get_parameter_source("data_dir") is not ParameterSource.COMMANDLINE:
        temp = tempfile.TemporaryDirectory(prefix="rag-eval-")
        settings.data_dir = Path(temp.name)
    try:
        with progress_bar(enabled=not as_json, label="indexing corpus") as progress:
            result = evaluate(
                ds,
                settings,
                mode_list,  # type: ignore[arg-type]
                ks=ks,
                answer_ks=answer_ks,
                progress=progress,
                slices=slices,
                llm=llm,
                max_generated=max_answers,
            )
    finally:
        if llm is not None:
            llm.close()
        if temp is not None:
            temp.cleanup()
    result["dataset_path"] = str(dataset_dir.resolve())
    result["config"]["llm"] = {
        "backend": settings.llm.backend,
        "model": settings.llm.model if llm is not None else None,
        "used": llm is not None,
        "note": llm_note,
    }
    failed = []
    for name, k, bar in bars:
        metric = f"{name}@{k}"
        values = [r[metric] for r in result["modes"].values() if metric in r]
        if not values:
            raise InputError(f"--fail-under: no mode reports {metric}")
        if max(values) < bar:
            failed.append(f"{metric} {max(values):.4f} < {bar}")
    if out_dir is not None:
        from eval.report import write_report

        write_report(result, out_dir)
    if as_json:
        emit_json(result)
    else:
        _print_eval(result, out_dir)
    if failed:
        click.echo("error: below the bar: " + "; ".join(failed), err=True)
        ctx.exit(1)


def _reachable_llm(settings: Settings, max_answers: int) -> tuple[LLM | None, str]:
    """The configured LLM when it answers a first request, else ``None`` and why not."""
    if max_answers == 0:
        return None, "--max-answers 0"
    if settings.llm.backend == "none":
        return None, "LLM backend is none"
    try:
        from rag.llm import make_llm
    except ImportError:
        return None, "no LLM support in this installation"
    from rag.errors import LLMError

    llm = make_llm(settings.llm)
    if llm is None:
        return None, "LLM backend is none"
    try:
        llm.context_length()  # the cheapest request that proves the server and model are there
    except LLMError as exc:
        llm.close()
        return None, f"LLM not reachable: {exc.one_line()}"
    return llm, "answers generated"


def _generate(
    out_dir: Path, n_queries: int, seed: int, llm_questions: bool, settings: Settings, as_json: bool
) -> None:
    from eval.generate import generate_collection
    from rag.errors import InputError
    from rag.store import ChunkStore

    question_fn = None
    llm = None
    if llm_questions:
        llm, note = _reachable_llm(settings, 1)
        if llm is None:
            raise InputError(f"--llm-questions needs a reachable LLM ({note})", hint="check RAG_LLM__*")
        question_fn = _llm_question_writer(llm)
    try:
        with ChunkStore(settings.data_dir, create=False) as store:
            meta = generate_collection(
                store,
                out_dir,
                n_queries=n_queries,
                seed=seed,
                question_fn=question_fn,
                question_model=settings.llm.model if llm is not None else None,
            )
    finally:
        if llm is not None:
            llm.close()
    if as_json:
        emit_json({"out_dir": str(out_dir), **meta})
        return
    click.echo(
        f"wrote {meta['n_queries']} queries over {meta['n_corpus']} chunks "
        f"({meta['n_documents_with_queries']} of {meta['n_documents']} documents) to {out_dir}"
    )
    if meta["n_queries"] < n_queries:
        click.echo(f"note: only {meta['n_queries']} of {n_queries} requested sentences qualified", err=True)
    click.echo(f"next: rag eval {out_dir}")


_QUESTION_PROMPT = (
    "Write one question that the following passage answers. Use the passage's language. "
    "Reply with the question only.\n\n<passage>\n{text}\n</passage>"
)


def _llm_question_writer(llm: LLM) -> Any:
    from rag.errors import LLMError
    from rag.models import Chunk

    def write(chunk: Chunk) -> str | None:
        prompt = _QUESTION_PROMPT.format(text=chunk.index_text(with_context=False)[:4000])
        try:
            reply = "".join(llm.stream_chat([{"role": "user", "content": prompt}]))
        except LLMError:
            return None  # keep the sentence query for this chunk
        return reply.strip().splitlines()[0] if reply.strip() else None

    return write


def _print_eval(result: dict[str, Any], out_dir: Path | None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from eval.report import TABLE_METRICS

    console = Console()
    short = {"ndcg": "nDCG", "recall": "R", "mrr": "MRR", "answer_recall": "AnsR"}

    def table(title: str, rows: dict[str, dict[str, float]], count: bool) -> Table:
        present = {m for r in rows.values() for m in r}
        cols = [m for m in TABLE_METRICS if m in present]
        cols += sorted((m for m in present if m.startswith("answer_recall@")), key=lambda m: int(m[14:]))
        labels = [short[m.partition("@")[0]] + "@" + m.partition("@")[2] for m in cols]
        head = ["mode", *(["n"] if count else []), *labels, "p50 ms", "p95 ms"]
        t = Table(*head, title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for mode, r in rows.items():
            cells = [f"{r[c]:.3f}" if c in r else "-" for c in cols]
            lat = [f"{r['latency_ms_p50']:.1f}", f"{r['latency_ms_p95']:.1f}"]
            t.add_row(mode, *([str(int(r["n_queries"]))] if count else []), *cells, *lat)
        return t

    console.print(
        table(
            f"{result['dataset']}: {result['n_queries']} queries, {result['n_corpus']} docs",
            result["modes"],
            False,
        )
    )
    for lang, rows in result.get("slices", {}).items():
        console.print(table(f"queries in {lang}", rows, True))
    gen = result.get("generation")
    if gen:
        cite = gen["citation_accuracy"]
        console.print(
            f"generated answers ({gen['llm']['model']}, {gen['n_queries']} queries): "
            f"EM {gen['exact_match']:.4f}, F1 {gen['f1']:.4f}, "
            f"citation accuracy {'-' if cite is None else f'{cite:.4f}'}"
        )
    elif result["config"].get("n_answers"):
        console.print(f"[dim]no generated answers: {result['config']['llm']['note']}[/]")
    console.print(
        f"[dim]indexing took {result['index_s']:.1f} s, total {result['timings']['total_s']:.1f} s[/]"
    )
    if out_dir is not None:
        console.print(f"[dim]report: {out_dir}/results.md, results.json, results.png[/]")
