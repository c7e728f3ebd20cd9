"""The ``rag`` command line: the composition root for people and scripts.

Every command takes ``--data-dir`` (env ``RAG_DATA_DIR``) and ``--json``.
Errors from the :mod:`rag.errors` hierarchy become one line on stderr and a
non-zero exit code; tracebacks are reserved for bugs.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from rag import __version__
from rag.errors import RagError
from rag.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


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


def common_options(fn: F) -> F:
    """--data-dir, --config and --json, on every command."""

    @click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="RAG_DATA_DIR",
        help="Where all index state lives [env RAG_DATA_DIR; default ~/.local/share/rag].",
    )
    @click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="RAG_CONFIG",
        help="TOML settings file [env RAG_CONFIG]. Env vars RAG_* override it.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
    @functools.wraps(fn)
    def wrapper(*args: Any, data_dir: Path | None, config_file: Path | None, as_json: bool, **kw: Any) -> Any:
        settings = load_settings(config_file, data_dir=data_dir)
        return fn(*args, settings=settings, as_json=as_json, **kw)

    return wrapper  # type: ignore[return-value]


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False))


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


# -- ingest ----------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--include", multiple=True, help="Only files matching this glob (repeatable), e.g. '*.md'.")
@click.option("--exclude", multiple=True, help="Skip files/folders matching this glob (repeatable), e.g. 'drafts/**'.")
@click.option("--no-redact", is_flag=True, help="Keep secrets (API keys, passwords) in the index. Not recommended.")
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
    from rag.store import ChunkStore

    if include:
        settings.ingest.include = list(include)
    if exclude:
        settings.ingest.exclude = [*settings.ingest.exclude, *exclude]
    if no_redact:
        settings.ingest.redact_secrets = False

    with ChunkStore(settings.data_dir) as store, _progress(enabled=not as_json, label="ingesting") as progress:
        report = sync_paths(list(paths), settings, store, progress=progress)

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
        out.print(f"[yellow]redacted {total} secret(s)[/]: " + ", ".join(f"{k}={v}" for k, v in r["redactions"].items()))
    for note in r["notes"]:
        if not note["note"].startswith("redacted"):
            out.print(f"[cyan]note[/] {note['path']}: {note['note']}", highlight=False)
    for fail in r["failed"]:
        out.print(f"[red]failed[/] {fail['path']}: {fail['error']}", highlight=False)
    out.print(f"[dim]index: {settings.data_dir}[/]")


class _progress:
    """A rich progress bar on stderr when it is a terminal; a no-op callback otherwise."""

    def __init__(self, *, enabled: bool, label: str) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.label = label
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[int, int, str], None] | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("[dim]{task.fields[item]}", justify="left"),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.__enter__()
        self._task = self._bar.add_task(self.label, total=None, item="")
        return self.update

    def update(self, done: int, total: int, item: str) -> None:
        self._bar.update(self._task, completed=done, total=total, item=item[-60:])

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


# -- documents -------------------------------------------------------------------------------------------------


@cli.command()
@common_options
def documents(settings: Settings, as_json: bool) -> None:
    """List indexed documents (source, format, pages, chunks, notes)."""
    from rag.store import ChunkStore

    with ChunkStore(settings.data_dir, create=False) as store:
        docs = store.documents()
    rows = [
        {
            "doc_id": d.doc_id,
            "source": d.source,
            "path": d.path,
            "format": d.format,
            "pages": d.n_pages,
            "chunks": d.n_chunks,
            "encoding": d.encoding,
            "notes": d.notes,
            "ingested_at": d.ingested_at,
        }
        for d in docs
    ]
    if as_json:
        emit_json({"documents": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("source", "format", "pages", "chunks", "notes")
    for r in rows:
        table.add_row(r["source"], r["format"], str(r["pages"] or ""), str(r["chunks"]), "; ".join(r["notes"]))
    Console().print(table)


def main() -> None:
    cli(prog_name="rag")


if __name__ == "__main__":
    main()
