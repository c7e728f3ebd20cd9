"""The ``rag`` command line: the composition root for people and scripts.

Every command takes ``--data-dir`` (env ``RAG_DATA_DIR``) and ``--json``.
Errors from the :mod:`rag.errors` hierarchy become one line on stderr and a
non-zero exit code; tracebacks are reserved for bugs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from cli.common import common_options, emit_json, progress_bar
from rag import __version__
from rag.errors import RagError
from rag.settings import Settings

#: When the process started (``perf_counter`` time), set by :func:`main`; None when the commands
#: are invoked otherwise (tests), where each command's own start counts.
_PROCESS_STARTED: float | None = None


def _process_age_s() -> float:
    """Seconds since this process started (0 where /proc cannot tell)."""
    import os

    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


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


#: Keys a server's ingest job adds to the `rag ingest --json` object (not printed by the CLI).
JOB_EXTRAS = ("generation", "publishes", "max_locked_ms")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--include", multiple=True, help="Only files matching this glob (repeatable), e.g. '*.md'.")
@click.option(
    "--exclude", multiple=True, help="Skip files/folders matching this glob (repeatable), e.g. 'drafts/**'."
)
@click.option(
    "--no-redact", is_flag=True, help="Keep secrets (API keys, passwords) in the index. Not recommended."
)
@click.option("--watch", is_flag=True, help="After the ingest, keep the folders in sync until stopped.")
@common_options
def ingest(
    paths: tuple[Path, ...],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    no_redact: bool,
    watch: bool,
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
    While `rag serve` owns the data dir the ingest runs in the server (same
    output). With --watch the folders stay in sync (new, changed, renamed and
    deleted files) until Ctrl-C; each sync prints one JSON line with --json.

    \b
    Examples:
      rag ingest ~/notes
      rag ingest ~/notes ~/papers/attention.pdf --exclude 'archive/**'
      rag ingest ~/notes --json | jq .failed
      rag ingest ~/notes --watch
    """
    started = _PROCESS_STARTED if _PROCESS_STARTED is not None else time.perf_counter()
    from cli.remote import owner_client, owner_of
    from rag.owner import owned_error

    if watch:
        owner = owner_of(settings)
        if owner is not None:
            err = owned_error(settings.data_dir, owner, doing="watch")
            if owner.kind == "server":
                err.hint = "run `rag serve --watch DIR` instead, or stop that server first"
            raise err
    client = owner_client(settings, "write", doing="ingest")
    if client is not None:
        with client, progress_bar(enabled=not as_json, label="ingesting (server)") as progress:
            result = client.ingest(
                list(paths),
                include=list(include),
                exclude=list(exclude),
                no_redact=no_redact,
                progress=progress,
            )
        report = {k: v for k, v in result.items() if k not in JOB_EXTRAS}
        if as_json:
            emit_json(report)
        else:
            _print_ingest_report(report, settings)
        return

    if include:
        settings.ingest.include = list(include)
    if exclude:
        settings.ingest.exclude = [*settings.ingest.exclude, *exclude]
    if no_redact:
        settings.ingest.redact_secrets = False
    _ingest_here(list(paths), settings, as_json=as_json, watch=watch, started=started)


def _ingest_here(
    paths: list[Path], settings: Settings, *, as_json: bool, watch: bool, started: float
) -> None:
    """The ingest in this process, which owns the data dir meanwhile (searches elsewhere go on).

    Search first, dense later: the chunk store and the BMX index are committed before the
    dense leg embeds, so `rag search` and `rag ask` work from then on; the dense phase
    commits in small batches, so a run stopped during it continues where it stopped.
    ``took_s`` is the command's wall time; ``phases`` splits it (``start``: imports, taking
    the data dir, opening the store and legs)."""
    from ingest.publish import ingest_and_publish
    from rag.engine import Engine
    from rag.filestatus import FileStatusBook
    from rag.owner import Ownership

    command = "rag ingest --watch" if watch else "rag ingest"
    with Ownership.acquire(settings.data_dir, "ingest", command=command):
        status = FileStatusBook(settings.data_dir)
        engine = Engine.open(settings, create=True)
        try:
            opening = time.perf_counter() - started
            with PhaseBoard(enabled=not as_json) as board:
                outcome = ingest_and_publish(
                    paths,
                    settings,
                    engine,
                    engine.store,
                    progress=board.reader,
                    publish_progress=board.update,
                    status=status,
                )
                phases = {"start": opening, **outcome.report.phases}
                if not watch:  # closing builds the vector index: part of the ingest's time
                    for name, seconds in engine.close().items():
                        phases[name] = phases.get(name, 0.0) + seconds
            outcome.report.phases = phases
            outcome.report.took_s = time.perf_counter() - started
            if as_json:
                emit_json(outcome.as_dict())
            else:
                _print_ingest_report(outcome.as_dict(), settings)
            if watch:
                _watch_here(paths, settings, engine, status, as_json=as_json)
        finally:
            engine.close()


#: Progress rows of `rag ingest`, in order, with what each counts.
PHASE_ROWS = {
    "read": "read + extract + chunk (files)",
    "bmx": "BMX index (chunks)",
    "graph": "entity graph (chunks)",
    "embed": "embed (chunks)",
    "vectors": "vector index (chunks)",
}


class PhaseBoard:
    """One progress row per ingest phase (with its own ETA) on stderr when it is a terminal."""

    def __init__(self, *, enabled: bool) -> None:
        import sys

        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> PhaseBoard:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description:<30}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("[dim]{task.fields[item]}", justify="left"),
                console=Console(stderr=True),
            )
            self._bar.__enter__()
        return self

    def reader(self, done: int, total: int, item: str) -> None:
        """Progress of the file pass (read, extract, chunk, store)."""
        self._report("read", done, total, item)

    def update(self, done: int, total: int, item: str) -> None:
        """Progress of a leg; ``item`` names the phase (``bmx``, ``embed``, ``vectors``, ``graph``)."""
        self._report(item if item in PHASE_ROWS else "bmx", done, total, "")

    def _report(self, phase: str, done: int, total: int, item: str) -> None:
        if self._bar is None:
            return
        task = self._tasks.get(phase)
        if task is None:
            task = self._tasks[phase] = self._bar.add_task(PHASE_ROWS[phase], total=total, item="")
        self._bar.update(task, completed=done, total=total, item=item[-50:])

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def _watch_here(paths: list[Path], settings: Settings, engine: Any, status: Any, *, as_json: bool) -> None:
    """Keep the folders in sync until Ctrl-C or SIGTERM (both end it quietly, exit code 0)."""
    import signal
    import threading

    from ingest.watch import FolderWatcher, sync_roots, watch_loop

    folders = [p.expanduser().resolve() for p in paths if p.expanduser().is_dir()]
    if not folders:
        from rag.errors import InputError

        raise InputError(
            "--watch needs a folder", hint="give the folder to watch, e.g. rag ingest ~/notes --watch"
        )
    stop = threading.Event()
    watcher = FolderWatcher(folders, debounce_ms=settings.ingest.watch_debounce_ms)

    def on_batch(changed: dict[str, str]) -> None:
        status.mark_pending(changed)
        outcome = sync_roots(folders, settings, engine, engine.store, status=status, cancel=stop)
        if outcome is not None and as_json:
            emit_json(outcome.as_dict())
        elif outcome is not None:
            r = outcome.report
            click.echo(
                f"synced: {r.added} added, {r.updated} updated, {r.deleted} deleted, {len(r.failed)} failed",
                err=True,
            )

    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo(f"watching {', '.join(map(str, folders))} (Ctrl-C to stop)", err=True)
        watch_loop(watcher, stop, on_batch)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    phases = r.get("phases") or {}
    if phases:
        table.add_row(
            "phases",
            ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items()),
        )
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
    from rag.engine import Engine
    from rag.errors import InputError

    if (query is None) == (batch is None):
        raise InputError("give either QUERY or --batch FILE", hint="see `rag search --help`")
    from cli.remote import owner_client

    client = owner_client(settings, "read", doing="search")
    if client is not None:
        with client:
            if batch is not None:
                for qid, text in _batch_queries(batch):
                    body = client.search(text, k, mode)
                    emit_json({"_id": qid, "took_ms": body["took_ms"], "hits": body["hits"]})
                return
            assert query is not None
            body = client.search(query, k, mode)
        if as_json:
            emit_json(body)
        else:
            _print_hits(query, mode, body["took_ms"], body["hits"])
        return
    if batch is None and settings.embedding.query_runtime == "auto":
        settings.embedding.query_runtime = "numpy"  # one query: skip importing torch (cold start)
    with Engine.open(settings) as engine:
        retriever = engine.retriever(mode)  # type: ignore[arg-type]
        for warning in engine.warnings:
            click.echo(f"warning: {warning}", err=True)
        if batch is not None:
            for qid, text in _batch_queries(batch):
                t0 = time.perf_counter()
                hits = retriever.search(str(text), k, mode)  # type: ignore[arg-type]
                took = (time.perf_counter() - t0) * 1000
                emit_json({"_id": qid, "took_ms": round(took, 2), "hits": [h.as_dict() for h in hits]})
            return
        assert query is not None
        t0 = time.perf_counter()
        hits = retriever.search(query, k, mode)  # type: ignore[arg-type]
        took = (time.perf_counter() - t0) * 1000
        coverage = engine.dense_coverage()
    if as_json:
        result: dict[str, Any] = {
            "query": query,
            "mode": mode,
            "took_ms": round(took, 2),
            "hits": [h.as_dict() for h in hits],
        }
        if coverage is not None:  # a dense leg is configured: how much of it is built
            result["dense_coverage"] = coverage
        emit_json(result)
        return
    _print_hits(query, mode, took, [h.as_dict() for h in hits])
    if coverage is not None and coverage < 1.0:
        click.echo(
            f"note: the dense leg covers {coverage:.0%} of the chunks so far (it is still embedding; "
            "the rest are ranked by the other legs)",
            err=True,
        )


def _batch_queries(batch: Any) -> Iterator[tuple[Any, str]]:
    """``(_id, text)`` of each JSONL line of ``--batch``."""
    from rag.errors import InputError

    for n, line in enumerate(batch, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            qid, text = item["_id"], item["text"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f'line {n} of --batch is not a JSON object with "_id" and "text"') from None
        yield qid, str(text)


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
    """List every file: indexed, pending (a change waits) or failed (with the reason), and the
    notes ingest kept (repairs, redactions)."""
    from cli.remote import owner_client

    client = owner_client(settings, "read", doing="list documents")
    if client is not None:
        with client:
            rows = client.documents()
    else:
        rows = _document_rows_here(settings)
    if as_json:
        emit_json({"documents": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("source", "status", "format", "pages", "chunks", "notes")
    for r in rows:
        notes = "; ".join(r["notes"]) if r["status"] != "failed" else str(r["error"])
        style = {"failed": "red", "pending": "yellow"}.get(r["status"])
        table.add_row(
            r["source"],
            r["status"],
            r["format"] or "",
            str(r["pages"] or ""),
            str(r["chunks"]),
            notes,
            style=style,
        )
    Console().print(table)


def _document_rows_here(settings: Settings) -> list[dict[str, Any]]:
    from rag.filestatus import document_rows, read_status
    from rag.store import ChunkStore

    with ChunkStore(settings.data_dir, create=False) as store:
        docs = store.documents()
    return document_rows(docs, read_status(settings.data_dir), settings.data_dir)


#: What `rag delete --json` prints (the body of DELETE /v1/documents/{id}, without its job id).
DELETE_KEYS = ("deleted", "doc_id", "source", "chunks", "removed_file")


@cli.command()
@click.argument("document")
@common_options
def delete(document: str, settings: Settings, as_json: bool) -> None:
    """Remove a document from every index (by doc id, source or path; see `rag documents`).

    \b
    An uploaded file (under the data dir's uploads/) is deleted too; a file of
    your folder is not (a later `rag ingest` of the folder brings it back).

    \b
    Examples:
      rag delete notes/old-draft.md
      rag delete 3f2a9c1e5b7d4a60 --json
    """
    from cli.remote import owner_client

    client = owner_client(settings, "write", doing="delete")
    if client is not None:
        with client:
            doc_id = _resolve_document(document, client.documents())
            body = client.delete(doc_id)
    else:
        body = _delete_here(document, settings)
    out = {k: body[k] for k in DELETE_KEYS}
    if as_json:
        emit_json(out)
        return
    click.echo(
        f"deleted {out['source']} ({out['chunks']} chunks)"
        + (", file removed" if out["removed_file"] else "")
    )


def _resolve_document(document: str, rows: list[dict[str, Any]]) -> str:
    """The doc id ``document`` names: a doc id, a path, or a source that only one document has."""
    from rag.errors import InputError, NotFoundError

    indexed = [r for r in rows if r["doc_id"]]
    for r in indexed:
        if document == r["doc_id"]:
            return str(r["doc_id"])
    path = str(Path(document).expanduser().resolve())
    by_path = [r for r in indexed if r["path"] == path]
    if len(by_path) == 1:
        return str(by_path[0]["doc_id"])
    by_source = [r for r in indexed if r["source"] == document]
    if len(by_source) == 1:
        return str(by_source[0]["doc_id"])
    if len(by_source) > 1:
        raise InputError(
            f"{len(by_source)} documents are named {document}",
            hint="give its doc id (`rag documents --json`)",
        )
    raise NotFoundError(f"no document {document}", hint="`rag documents` lists them")


def _delete_here(document: str, settings: Settings) -> dict[str, Any]:
    from api.uploads import remove_upload, uploads_dir
    from ingest.publish import delete_and_publish
    from rag.engine import Engine
    from rag.filestatus import FileStatusBook
    from rag.owner import Ownership

    with Ownership.acquire(settings.data_dir, "ingest", command="rag delete"):
        doc_id = _resolve_document(document, _document_rows_here(settings))
        with Engine.open(settings) as engine:
            record, _ = delete_and_publish(
                engine, engine.store, doc_id, status=FileStatusBook(settings.data_dir)
            )
    removed = remove_upload(uploads_dir(settings.data_dir), record.path)
    return {
        "deleted": True,
        "doc_id": record.doc_id,
        "source": record.source,
        "chunks": record.n_chunks,
        "removed_file": removed,
    }


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
    global _PROCESS_STARTED
    _PROCESS_STARTED = time.perf_counter() - _process_age_s()
    cli(prog_name="rag")


if __name__ == "__main__":
    main()
