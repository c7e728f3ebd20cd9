"""The notes index as a llama-index retriever: ``pip install 'rag-notes[llama-index]'``.

:class:`NotesRetriever` is a llama-index ``BaseRetriever`` over a data dir built
by ``rag ingest``, so a stock ``RetrieverQueryEngine``, a chat engine or an agent
tool, with any llama-index LLM, answers from the user's notes::

    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.llms.ollama import Ollama
    from rag.integrations.llama_index import NotesRetriever

    retriever = NotesRetriever(data_dir="~/.local/share/rag", mode="hybrid", k=6)
    engine = RetrieverQueryEngine.from_args(retriever, llm=Ollama(model="qwen2.5:7b-instruct"))
    print(engine.query("它默认监听哪个端口？"))

Each node is one chunk: its text, ``id_`` the chunk id, and metadata ``source``
(path relative to the ingested folder), ``page`` (1-based for PDFs, else None),
``start`` and ``end`` (character offsets in the document's text), ``heading``
(the heading path joined by " > ") and ``heading_path`` (a list), ``doc_id``,
``chunk_id``, ``rank``, ``mode`` and ``scores`` (each leg's score, None where a
leg did not return the chunk: the ``scores`` of the ``rag search`` contract).
The LLM sees ``source``, ``page`` and ``heading`` above the text; the node's
score is the fused score (or the leg's, in a one-leg mode).

Only retrieval crosses over: ingest, the indexes and ``rag ask``'s own answer
path stay in this project (see the README for why).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, get_args

from rag.errors import ConfigError, DependencyMissingError
from rag.retrieval.search import Hit, Mode
from rag.settings import Settings, load_settings

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise DependencyMissingError(
        "the llama-index integration needs llama-index-core",
        hint="pip install 'rag-notes[llama-index]'",
    ) from exc

__all__ = ["NotesRetriever", "hit_to_node"]

# Shown to the LLM above each chunk; the rest is for code (citations, offsets, scores).
LLM_METADATA = ("source", "page", "heading")


def hit_to_node(hit: Hit, mode: str) -> NodeWithScore:
    """One search hit as a llama-index node with its score."""
    c = hit.chunk
    metadata: dict[str, Any] = {
        "source": c.source,
        "page": c.page,
        "heading": c.heading,
        "heading_path": list(c.heading_path),
        "start": c.start,
        "end": c.end,
        "doc_id": c.doc_id,
        "chunk_id": c.chunk_id,
        "rank": hit.rank,
        "mode": mode,
        "scores": dict(hit.scores),
    }
    hidden = [key for key in metadata if key not in LLM_METADATA]
    node = TextNode(
        id_=c.chunk_id,
        text=c.text,
        metadata=metadata,
        excluded_llm_metadata_keys=hidden,
        excluded_embed_metadata_keys=hidden,
    )
    return NodeWithScore(node=node, score=float(hit.score))


class NotesRetriever(BaseRetriever):
    """Retrieve chunks of the notes indexed in ``data_dir`` (BMX sparse, dense and graph legs,
    fused as ``rag search`` does).

    ``data_dir`` defaults to ``RAG_DATA_DIR`` or the settings' default; ``settings`` (a
    :class:`rag.settings.Settings`) replaces the environment entirely. The index is opened
    read-only on the first query and kept until :meth:`close` (or the ``with`` block ends).
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        mode: Mode = "hybrid",
        k: int = 6,
        *,
        settings: Settings | None = None,
        config_file: str | Path | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if mode not in get_args(Mode):
            raise ConfigError(f"unknown mode {mode!r}", hint=f"one of: {', '.join(get_args(Mode))}")
        if k < 1:
            raise ConfigError(f"k must be at least 1, not {k}")
        if settings is None:
            folder = Path(data_dir).expanduser() if data_dir is not None else None
            settings = load_settings(Path(config_file) if config_file else None, data_dir=folder)
        elif data_dir is not None:
            settings = settings.model_copy(update={"data_dir": Path(data_dir).expanduser()})
        self.settings = settings
        self.mode: Mode = mode
        self.k = k
        self._engine: Any = None
        self._lock = threading.Lock()
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        with self._lock:
            if self._engine is None:
                from rag.engine import Engine

                self._engine = Engine.open(self.settings)
            hits = self._engine.search(query_bundle.query_str, self.k, self.mode)
        return [hit_to_node(h, self.mode) for h in hits]

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None

    def __enter__(self) -> NotesRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
