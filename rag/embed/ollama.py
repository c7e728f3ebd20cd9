"""Embeddings from an Ollama server (``ollama:<name>``, e.g. ``ollama:bge-m3``, ``ollama:nomic-embed-text``).

The texts go to the server's ``/api/embed`` through the official ``ollama``
client (via :class:`rag.llm.ollama.OllamaLLM`, which maps its errors to one-line
messages: server down, model not pulled → ``ollama pull <name>``, timeouts), in
batches of ``batch_size``. In the compose layout the Ollama service holds the
GPU, so this is the GPU path for embeddings. The dimension is read from the
server's first reply (a one-text probe when the embedder is built); passages go
through the same content-hash :class:`~rag.embed.cache.EmbeddingCache` as any
other embedder, keyed by ``ollama:<name>``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence

import numpy as np

from rag.embed.base import Prefixes, l2_normalize, prefixes_for, variant_name
from rag.errors import BackendError, ConfigError

__all__ = ["DEFAULT_OLLAMA_URL", "OllamaEmbedder", "default_ollama_url"]

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
_PROBE = "dimension probe"


def default_ollama_url() -> str:
    """The LLM's Ollama URL (``RAG_LLM__URL``), else ``OLLAMA_HOST``, else the local default."""
    for var in ("RAG_LLM__URL", "OLLAMA_HOST"):
        value = os.environ.get(var, "").strip()
        if value:
            return value if "://" in value else f"http://{value}"
    return DEFAULT_OLLAMA_URL


def _canonical(model: str) -> str:
    return model[: -len(":latest")] if model.endswith(":latest") else model


class OllamaEmbedder:
    """Vectors from the embedding model ``model`` on the Ollama server at ``url``, L2-normalised.

    ``timeout_s`` bounds each request (a cold model load included); ``connect_timeout_s``
    the TCP connection; ``retries`` the retries on a refused connection or a busy server.
    """

    def __init__(
        self,
        model: str,
        *,
        url: str | None = None,
        batch_size: int = 32,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        retries: int = 2,
        prefixes: Prefixes | None = None,
    ) -> None:
        from rag.llm.ollama import OllamaLLM
        from rag.settings import LLMSettings

        model = model.strip()
        if not model:
            raise ConfigError("no Ollama embedding model named", hint="e.g. ollama:bge-m3")
        if batch_size < 1:
            raise ConfigError(f"embedding batch size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self.url = (url or default_ollama_url()).strip()
        default = prefixes_for(model)
        self.prefixes = prefixes if prefixes is not None else default
        self.name = variant_name(f"ollama:{_canonical(model)}", self.prefixes, default)
        settings = LLMSettings.model_validate(
            {
                "backend": "ollama",
                "url": self.url,
                "model": model,
                "connect_timeout_s": connect_timeout_s,
                "first_token_timeout_s": timeout_s,
                "read_timeout_s": timeout_s,
                "retries": retries,
            }
        )
        self._llm = OllamaLLM(settings)
        # The client's pooled connections are closed with the embedder, even when nobody calls close().
        self._finalizer = weakref.finalize(self, self._llm.close)
        self.requests = 0
        try:
            (probe,) = self._request([_PROBE])
        except BaseException:
            self.close()
            raise
        self.dim = len(probe)
        if self.dim == 0:
            raise BackendError(
                f"Ollama model {model} returned an empty embedding",
                hint="is it an embedding model? e.g. ollama:bge-m3 or ollama:nomic-embed-text",
            )

    def _request(self, texts: Sequence[str]) -> list[list[float]]:
        self.requests += 1
        vectors = self._llm.embed(texts, self.model)
        if len(vectors) != len(texts):
            raise BackendError(
                f"Ollama returned {len(vectors)} embeddings for {len(texts)} texts (model {self.model})"
            )
        return vectors

    def _embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = [prefix + t for t in texts[start : start + self.batch_size]]
            vectors = self._request(batch)
            if any(len(v) != self.dim for v in vectors):
                got = sorted({len(v) for v in vectors})
                raise BackendError(
                    f"Ollama model {self.model} returned {got}-d embeddings, expected {self.dim}-d"
                )
            out[start : start + len(batch)] = np.asarray(vectors, dtype=np.float32)
        return l2_normalize(out)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.prefixes.query)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.prefixes.passage)

    def close(self) -> None:
        self._finalizer()
