"""The entity graph: chunks linked by the entities they mention, and the ``graph`` retrieval leg.

=======================  =====================================================
:mod:`.normalize`        surface form to key (case, width, separators,
                         Traditional/Simplified), the user's alias table
:mod:`.extract`          entities by rules (no LLM): Chinese terms, English
                         noun phrases and names, packages, models, commands,
                         identifiers, hosts, ports
:mod:`.llm`              entities by the configured LLM (optional, on top)
:mod:`.store`            the graph in SQLite under ``<data_dir>/graph``
:mod:`.leg`              :class:`GraphLeg`: sync from the chunk store, search
:mod:`.describe`         one entity's card, GraphML / JSON export
=======================  =====================================================

Importing this package loads neither jieba nor an LLM client; they load on first use.
"""

from __future__ import annotations

from rag.graph.describe import describe_entity, export_json, graph_data, to_graphml
from rag.graph.extract import Mention, RuleExtractor
from rag.graph.leg import GraphLeg, graph_leg
from rag.graph.normalize import AliasTable, load_alias_table, normalize_key

__all__ = [
    "AliasTable",
    "GraphLeg",
    "Mention",
    "RuleExtractor",
    "describe_entity",
    "export_json",
    "graph_data",
    "graph_leg",
    "load_alias_table",
    "normalize_key",
    "to_graphml",
]
