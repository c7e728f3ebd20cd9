"""`rag graph`: look at the entity graph that `rag ingest` builds (one entity, or the whole graph)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cli.common import common_options, emit_json
from rag.settings import Settings


@click.group("graph")
def graph_group() -> None:
    """The entity graph: packages, models, commands, hosts, ports and terms, linked by the chunks
    that mention them together.

    \b
    Examples:
      rag graph entity "docker commit"
      rag graph entity huggingface --json | jq .documents
      rag graph export -o notes.graphml          # open in Gephi
      rag graph export --format json -o graph.json
    Spellings, case, full/half width and Traditional/Simplified Chinese all find the same
    entity; more variants go in the alias table (<data_dir>/aliases.toml or
    RAG_GRAPH__ALIASES):  [aliases]  "Hugging Face" = ["HF", "huggingface"]
    """


@graph_group.command("entity")
@click.argument("name")
@click.option(
    "--limit", type=click.IntRange(1, 100_000), default=50, show_default=True, help="Mentions to list."
)
@click.option(
    "--neighbours",
    "n_neighbours",
    type=click.IntRange(0, 1000),
    default=20,
    show_default=True,
    help="Neighbour entities to list (most shared chunks first).",
)
@common_options
def entity_cmd(name: str, limit: int, n_neighbours: int, settings: Settings, as_json: bool) -> None:
    """What the graph knows about NAME: where it is mentioned, what it appears with, in which documents.

    \b
    Examples:
      rag graph entity "ollama ps"
      rag graph entity 容器 --limit 10
      rag graph entity qwen2.5:7b-instruct --json
    """
    from urllib.parse import quote

    from cli.remote import owner_client
    from rag.engine import Engine
    from rag.graph import describe_entity

    client = owner_client(settings, "read", doing="describe an entity")
    if client is not None:
        with client:
            params = {"limit": min(limit, 1000), "neighbours": min(n_neighbours, 200)}
            card = client.call("GET", f"/v1/graph/entities/{quote(name, safe='')}", params=params)
    else:
        with Engine.open(settings) as engine:
            card = describe_entity(engine, name, limit=limit, neighbours=n_neighbours)
    if as_json:
        emit_json(card)
        return
    _print_card(card)


def _print_card(card: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape

    out = Console()
    out.print(f"[bold]{escape(card['name'])}[/]  [dim]{card['kind']}, key {escape(card['key'])}[/]")
    if card["aliases"]:
        out.print("also written: " + ", ".join(escape(a) for a in card["aliases"]), highlight=False)
    docs = card["documents"]
    out.print(f"mentioned in {card['n_mentions']} chunk(s) of {len(docs)} document(s)")
    for source in docs:
        out.print(f"  [cyan]{escape(source)}[/]", highlight=False)
    if card["neighbours"]:
        out.print("appears with:")
        out.print(
            "  " + ", ".join(f"{escape(n['name'])} [dim]({n['weight']})[/]" for n in card["neighbours"]),
            highlight=False,
        )
    shown = card["mentions"]
    if len(shown) < card["n_mentions"]:
        out.print(f"[dim]{len(shown)} of {card['n_mentions']} mentions listed; --limit shows more[/]")


@graph_group.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["graphml", "json"]),
    default="graphml",
    show_default=True,
    help="GraphML (Gephi, yEd, Cytoscape, networkx) or JSON (nodes and edges).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default: stdout).",
)
@click.option(
    "--min-weight",
    type=click.IntRange(1, 1_000_000),
    default=1,
    show_default=True,
    help="Leave out edges shared by fewer chunks.",
)
@common_options
def export_cmd(fmt: str, output: Path | None, min_weight: int, settings: Settings, as_json: bool) -> None:
    """Write the whole graph: nodes (name, kind, mentions) and weighted co-occurrence edges.

    \b
    Examples:
      rag graph export -o notes.graphml
      rag graph export --format json --min-weight 2 | jq '.nodes | length'
    """
    from cli.remote import owner_of
    from rag.engine import Engine
    from rag.errors import InputError
    from rag.graph.describe import graph_data, leg_of, to_graphml, to_json
    from rag.owner import owned_error

    owner = owner_of(settings)
    if owner is not None and owner.kind == "server":  # the server holds the graph; no export endpoint
        err = owned_error(settings.data_dir, owner, doing="export the graph")
        err.hint = "stop the server first, or look entities up with `rag graph entity NAME` meanwhile"
        raise err
    with Engine.open(settings) as engine:
        nodes, edges = graph_data(leg_of(engine), min_weight=min_weight)
    if fmt == "json":
        data = json.dumps(to_json(nodes, edges), ensure_ascii=False).encode()
    else:
        data = to_graphml(nodes, edges)
    if output is None:
        click.echo(data, nl=fmt == "json")
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror}") from None
    if as_json:
        emit_json({"output": str(output), "format": fmt, "entities": len(nodes), "edges": len(edges)})
    else:
        click.echo(f"wrote {len(nodes)} entities and {len(edges)} edges to {output}", err=True)
