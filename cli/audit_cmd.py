"""`rag audit`: is anything secret-looking stored in the data dir? Exit 1 when so, saying where."""

from __future__ import annotations

from pathlib import Path

import click

from cli.common import common_options, emit_json
from rag.errors import InputError
from rag.settings import Settings

#: Exit status when the audit finds something (errors keep their own codes).
EXIT_FINDINGS = 1


@click.command("audit")
@common_options
def audit_cmd(settings: Settings, as_json: bool) -> None:
    """Scan every file of the data dir for stored secrets (passwords, API keys, tokens).

    \b
    Reads the bytes of every store (chunk store and its journal, BMX index,
    entity graph, vector store, embedding cache, logs), including deleted rows
    a database still keeps in free space, and reports each secret-looking
    string with its file and a masked excerpt (first two characters and the
    length; the secret itself is never printed). Exit status 0 when nothing
    is found, 1 when something is: re-run `rag ingest` to re-process notes
    with the current redactor, then audit again.

    \b
    Examples:
      rag audit
      rag audit --data-dir ~/.local/share/rag --json | jq '.findings[].file'
    """
    from ingest.audit import audit_data_dir

    data_dir = Path(settings.data_dir)
    if not data_dir.is_dir():
        raise InputError(f"no data dir at {data_dir}", hint="pass --data-dir DIR or set RAG_DATA_DIR")
    report = audit_data_dir(data_dir)
    if as_json:
        emit_json(report.as_dict())
    else:
        _print(report.as_dict(), data_dir)
    if report.findings:
        click.get_current_context().exit(EXIT_FINDINGS)


def _print(r: dict, data_dir: Path) -> None:
    from rich.console import Console
    from rich.markup import escape

    out = Console()
    for f in r["findings"]:
        where = f" [dim]({escape(f['where'])})[/]" if f["where"] else ""
        out.print(
            f"[red]{escape(f['kind'])}[/] [cyan]{escape(f['file'])}[/]{where}: {escape(f['excerpt'])}",
            highlight=False,
        )
    summary = f"{r['files']} files, {r['bytes'] / 2**20:.1f} MiB scanned in {r['took_s']:.1f} s"
    if r["findings"]:
        out.print(f"[red]{len(r['findings'])} secret-looking string(s) stored[/] ({summary})")
    else:
        out.print(f"[green]nothing secret-looking stored[/] ({summary}) in {escape(str(data_dir))}")
