"""Reading the graph for people: one entity's card (:func:`describe_entity`) and whole-graph export."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from rag.errors import InputError, NotFoundError
from rag.graph.leg import GraphLeg
from rag.graph.normalize import normalize_key

if TYPE_CHECKING:
    from rag.engine import Engine
    from rag.store import ChunkStore

__all__ = [
    "describe",
    "describe_entity",
    "display_name",
    "export_json",
    "graph_data",
    "leg_of",
    "to_graphml",
    "to_json",
]

GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def leg_of(engine: Engine) -> GraphLeg:
    """The engine's graph leg (:class:`InputError` when the graph is disabled)."""
    leg = engine.leg("graph")
    if not isinstance(leg, GraphLeg):  # pragma: no cover - the engine builds GraphLeg for "graph"
        raise InputError("the graph leg is not an entity graph")
    return leg


def describe_entity(engine: Engine, name: str, *, limit: int = 100, neighbours: int = 20) -> dict[str, Any]:
    """What the graph knows about ``name`` (any spelling or alias of it)::

        {"name", "key", "kind", "aliases": [str], "n_mentions",
         "mentions": [{"chunk_id", "doc_id", "source", "page"}]   (at most ``limit``, by source),
         "neighbours": [{"name", "weight"}]                      (at most ``neighbours``, heaviest first),
         "documents": [source]}

    Raises :class:`NotFoundError` when no entity has that key.
    """
    return describe(leg_of(engine), engine.store, name, limit=limit, neighbours=neighbours)


def describe(
    leg: GraphLeg, store: ChunkStore, name: str, *, limit: int = 100, neighbours: int = 20
) -> dict[str, Any]:
    """:func:`describe_entity` on a leg and a chunk store."""
    aliases = leg.extractor.aliases
    key = aliases.resolve(normalize_key(name))
    found = leg.graph.entities([key]) if key else {}
    if key not in found:
        raise NotFoundError(f"no entity {name!r} in the graph", hint=_suggest(leg, key))
    eid, df = found[key]
    surfaces = leg.graph.surfaces(eid)
    display = display_name(leg, key, eid, surfaces)
    kinds = leg.graph.kinds(eid)
    kind = min(kinds.items(), key=lambda kv: (-kv[1], kv[0]))[0] if kinds else "term"
    variants = set(aliases.variants.get(key, ())) | set(surfaces)
    variants.discard(display)

    postings = leg.graph.postings(eid)
    chunks = store.get_chunks([cid for cid, _ in postings])
    chunks.sort(key=lambda c: (c.source, c.page or 0, c.ordinal))
    mentions = [
        {"chunk_id": c.chunk_id, "doc_id": c.doc_id, "source": c.source, "page": c.page} for c in chunks
    ]
    rows = sorted(leg.graph.neighbours(eid), key=lambda r: (-r[2], r[1]))[:neighbours]
    return {
        "name": display,
        "key": key,
        "kind": kind,
        "aliases": sorted(variants),
        "n_mentions": df,
        "mentions": mentions[:limit],
        "neighbours": [
            {"name": display_name(leg, nkey, nid), "weight": weight} for nid, nkey, weight, _ in rows
        ],
        "documents": sorted({c.source for c in chunks}),
    }


def display_name(leg: GraphLeg, key: str, eid: int, surfaces: Any = None) -> str:
    """The alias table's canonical name, else the most frequent spelling (ties: the smallest)."""
    canonical = leg.extractor.aliases.canonical.get(key)
    if canonical:
        return canonical
    counts = surfaces if surfaces is not None else leg.graph.surfaces(eid)
    if not counts:
        return key
    return str(min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0])


def _suggest(leg: GraphLeg, key: str) -> str:
    if leg.graph.count("chunks") == 0:
        return "the entity graph is empty: run `rag ingest FOLDER` to build it"
    close = leg.graph.keys_like(key[:24], limit=5) if key else []
    if not close:
        return "try another spelling, or `rag graph export` to see every entity"
    names = [display_name(leg, k, leg.graph.entities([k])[k][0]) for k in close]
    return "did you mean: " + ", ".join(names)


# -- export ----------------------------------------------------------------------------------------


def graph_data(leg: GraphLeg, *, min_weight: int = 1) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(nodes, edges)``: nodes ``{"id", "name", "kind", "mentions"}`` (id = the key), edges
    ``{"source", "target", "weight"}`` with at least ``min_weight`` shared chunks."""
    canonical = leg.extractor.aliases.canonical
    key_of: dict[int, str] = {}
    nodes: list[dict[str, Any]] = []
    for eid, key, df, name, kind in leg.graph.iter_nodes():
        key_of[eid] = key
        nodes.append({"id": key, "name": canonical.get(key, name), "kind": kind, "mentions": df})
    edges = [
        {"source": key_of[a], "target": key_of[b], "weight": w}
        for a, b, w in leg.graph.iter_edges(min_weight)
        if a in key_of and b in key_of
    ]
    return nodes, edges


def export_json(leg: GraphLeg, *, min_weight: int = 1) -> dict[str, Any]:
    """The graph as ``{"directed": false, "nodes": [...], "edges": [...]}`` (see :func:`graph_data`)."""
    nodes, edges = graph_data(leg, min_weight=min_weight)
    return to_json(nodes, edges)


def to_json(nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> dict[str, Any]:
    return {"directed": False, "nodes": nodes, "edges": edges}


def _clean(text: str) -> str:
    return _XML_BAD.sub("", text)


def to_graphml(nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> bytes:
    """GraphML (http://graphml.graphdrawing.org/) for Gephi, yEd, Cytoscape or networkx: node
    attributes ``label``, ``kind``, ``mentions``; edge attribute ``weight``."""
    ET.register_namespace("", GRAPHML_NS)
    root = ET.Element(f"{{{GRAPHML_NS}}}graphml")
    for kid, target, attr, kind in (
        ("label", "node", "label", "string"),
        ("kind", "node", "kind", "string"),
        ("mentions", "node", "mentions", "int"),
        ("weight", "edge", "weight", "double"),
    ):
        ET.SubElement(
            root,
            f"{{{GRAPHML_NS}}}key",
            {"id": kid, "for": target, "attr.name": attr, "attr.type": kind},
        )
    graph = ET.SubElement(root, f"{{{GRAPHML_NS}}}graph", {"id": "entities", "edgedefault": "undirected"})
    for n in nodes:
        node = ET.SubElement(graph, f"{{{GRAPHML_NS}}}node", {"id": _clean(n["id"])})
        for kid, value in (("label", n["name"]), ("kind", n["kind"]), ("mentions", n["mentions"])):
            ET.SubElement(node, f"{{{GRAPHML_NS}}}data", {"key": kid}).text = _clean(str(value))
    for i, e in enumerate(edges):
        edge = ET.SubElement(
            graph,
            f"{{{GRAPHML_NS}}}edge",
            {"id": f"e{i}", "source": _clean(e["source"]), "target": _clean(e["target"])},
        )
        ET.SubElement(edge, f"{{{GRAPHML_NS}}}data", {"key": "weight"}).text = str(float(e["weight"]))
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))
