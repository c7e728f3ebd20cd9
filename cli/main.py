"""The ``rag`` command line: the composition root for people and scripts.

Every command takes ``--data-dir`` (env ``RAG_DATA_DIR``) and ``--json``.
Errors from the :mod:`rag.errors` hierarchy become one line on stderr and a
non-zero exit code; tracebacks are reserved for bugs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cli.common import common_options, emit_json, progress_bar
from rag import __version__
from rag.errors import RagError
from rag.settings import Settings


class RagGroup(click.Group):
    """Translates :class:`RagError` into one line + exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RagError as exc:
            click.echo(f"error: {exc.one_line()}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; committed work is kept, re-run to finish", err=True)
            ctx.exit(130)


@click.group(cls=RagGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rag")
def cli() -> None:
    """Ask questions about your own folder of notes (markdown, text, PDF).

    \b
    Typical use:
      rag ingest ~/notes            # index the folder (re-run to sync changes)
      rag documents                 # what is indexed
    Settings: env vars RAG_* (nested with __, e.g. RAG_CHUNKING__SIZE=400) or --config FILE.toml.
    """


# -- ingest ----------------------------------------------------------------------------------------


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--include", multiple=True, help="Only files matching this glob (repeatable), e.g. '*.md'.")
@click.option(
    "--exclude", multiple=True, help="Skip files/folders matching this glob (repeatable), e.g. 'drafts/**'."
)
@click.option(
    "--no-redact", is_flag=True, help="Keep secrets (API keys, passwords) in the index. Not recommended."
)
@common_options
def ingest(
    paths: tuple[Path, ...],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    no_redact: bool,
    settings: Settings,
    as_json: bool,
) -> None:
    """Index files and folders; re-run to sync (new, changed and deleted files).

    \b
    Markdown (.md .markdown), text (.txt) and PDF files are read; hidden folders
    such as .git are skipped. Files that cannot be read are listed under
    `failed` and never stop the run. Secrets are redacted before indexing.
    An interrupted run loses nothing: run it again.

    \b
    Examples:
      rag ingest ~/notes
      rag ingest ~/notes ~/papers/attention.pdf --exclude 'archive/**'
      rag ingest ~/notes --json | jq .failed
    """
    from ingest.pipeline import sync_paths

    if include:
        settings.ingest.include = list(include)
    if exclude:
        settings.ingest.exclude = [*settings.ingest.exclude, *exclude]
    if no_redact:
        settings.ingest.redact_secrets = False

    from rag.engine import Engine

    with Engine.open(settings, create=True) as engine:
        with progress_bar(enabled=not as_json, label="reading files") as progress:
            report = sync_paths(list(paths), settings, engine.store, progress=progress)
        with progress_bar(enabled=not as_json, label="indexing") as progress:
            engine.store.acquire_writer_lock()
            try:
                engine.sync(progress=progress)
            finally:
                engine.store.release_writer_lock()

    if as_json:
        emit_json(report.as_dict())
        return
    _print_ingest_report(report.as_dict(), settings)


def _print_ingest_report(r: dict[str, Any], settings: Settings) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    table = Table(show_header=False, box=None)
    for key in ("added", "updated", "unchanged", "deleted"):
        table.add_row(key, str(r[key]))
    table.add_row("failed", str(len(r["failed"])), style="red" if r["failed"] else None)
    table.add_row("documents", str(r["documents"]))
    table.add_row("chunks", str(r["chunks"]))
    table.add_row("took", f"{r['took_s']:.2f} s")
    out.print(table)
    if r["redactions"]:
        total = sum(r["redactions"].values())
        out.print(
            f"[yellow]redacted {total} secret(s)[/]: "
            + ", ".join(f"{k}={v}" for k, v in r["redactions"].items())
        )
    for note in r["notes"]:
        if not note["note"].startswith("redacted"):
            out.print(f"[cyan]note[/] {note['path']}: {note['note']}", highlight=False)
    for fail in r["failed"]:
        out.print(f"[red]failed[/] {fail['path']}: {fail['error']}", highlight=False)
    out.print(f"[dim]index: {settings.data_dir}[/]")


# -- search ----------------------------------------------------------------------------------------

MODES = ["hybrid", "sparse", "dense", "graph"]


@cli.command()
@click.argument("query", required=False)
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True, help="Number of hits.")
@click.option(
    "--mode", type=click.Choice(MODES), default="hybrid", show_default=True, help="Which legs to use."
)
@click.option(
    "--batch",
    type=click.File("r", encoding="utf-8"),
    help='JSONL queries {"_id", "text"} (- for stdin); prints one JSONL result per query.',
)
@common_options
def search(query: str | None, k: int, mode: str, batch: Any, settings: Settings, as_json: bool) -> None:
    """Search the index: BMX, dense and fused hybrid, with per-leg scores.

    \b
    Examples:
      rag search "ollama 用 GPU 启动"
      rag search "docker commit" -k 5 --mode sparse --json
      printf '{"_id":"q1","text":"num_ctx"}\\n' | rag search --batch - > results.jsonl
    """
    import time

    from rag.engine import Engine
    from rag.errors import InputError

    if (query is None) == (batch is None):
        raise InputError("give either QUERY or --batch FILE", hint="see `rag search --help`")
    if batch is None and settings.embedding.query_runtime == "auto":
        settings.embedding.query_runtime = "numpy"  # one query: skip importing torch (cold start)
    with Engine.open(settings) as engine:
        retriever = engine.retriever(mode)  # type: ignore[arg-type]
        for warning in engine.warnings:
            click.echo(f"warning: {warning}", err=True)
        if batch is not None:
            for n, line in enumerate(batch, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    qid, text = item["_id"], item["text"]
                except (ValueError, KeyError, TypeError):
                    raise InputError(
                        f'line {n} of --batch is not a JSON object with "_id" and "text"'
                    ) from None
                t0 = time.perf_counter()
                hits = retriever.search(str(text), k, mode)  # type: ignore[arg-type]
                took = (time.perf_counter() - t0) * 1000
                emit_json({"_id": qid, "took_ms": round(took, 2), "hits": [h.as_dict() for h in hits]})
            return
        assert query is not None
        t0 = time.perf_counter()
        hits = retriever.search(query, k, mode)  # type: ignore[arg-type]
        took = (time.perf_counter() - t0) * 1000
    if as_json:
        emit_json(
            {"query": query, "mode": mode, "took_ms": round(took, 2), "hits": [h.as_dict() for h in hits]}
        )
        return
    _print_hits(query, mode, took, [h.as_dict() for h in hits])


def _print_hits(query: str, mode: str, took_ms: float, hits: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape

    out = Console()
    if not hits:
        out.print(f"no results for [bold]{escape(query)}[/] ({mode}, {took_ms:.0f} ms)")
        return
    out.print(f"[dim]{len(hits)} hits, {mode}, {took_ms:.0f} ms[/]")
    for h in hits:
        where = h["source"] + (f" p.{h['page']}" if h["page"] else "") + f" [{h['start']}:{h['end']}]"
        legs = "  ".join(
            f"{name}={score:.3f}"
            for name, score in h["scores"].items()
            if score is not None and name != "fused"
        )
        out.print(f"[bold]{h['rank']}.[/] [cyan]{escape(where)}[/]  [dim]{h['score']:.3f} ({legs})[/]")
        if h["heading"]:
            out.print(f"   [green]{escape(h['heading'])}[/]")
        snippet = " ".join(h["text"].split())
        out.print("   " + escape(snippet[:240] + ("…" if len(snippet) > 240 else "")), highlight=False)


# -- documents -------------------------------------------------------------------------------------


@cli.command()
@common_options
def documents(settings: Settings, as_json: bool) -> None:
    """List indexed documents (source, format, pages, chunks, notes)."""
    from rag.store import ChunkStore

    with ChunkStore(settings.data_dir, create=False) as store:
        docs = store.documents()
    rows = [d.listing() for d in docs]
    if as_json:
        emit_json({"documents": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("source", "format", "pages", "chunks", "notes")
    for d in docs:
        table.add_row(d.source, d.format, str(d.n_pages or ""), str(d.n_chunks), "; ".join(d.notes))
    Console().print(table)


def _register() -> None:
    from cli.ask import ask_cmd
    from cli.audit_cmd import audit_cmd
    from cli.chat_cmd import chat_cmd
    from cli.eval_cmd import eval_cmd
    from cli.graph_cmd import graph_group
    from cli.serve import serve_cmd

    cli.add_command(eval_cmd)
    cli.add_command(ask_cmd)
    cli.add_command(chat_cmd)
    cli.add_command(serve_cmd)
    cli.add_command(graph_group)
    cli.add_command(audit_cmd)


_register()


def main() -> None:
    cli(prog_name="rag")


if __name__ == "__main__":
    main()
