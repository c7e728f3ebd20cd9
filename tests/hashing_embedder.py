"""A deterministic test embedder: bag-of-words feature hashing, unit-length vectors.

It fills a real vector store and a real dense leg without a model; it is not a
stand-in for embedding quality (tests that need a real model use one from a
package, in the slow tier)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


class HashingEmbedder:
    def __init__(self, dim: int = 64, name: str | None = None) -> None:
        self.dim = dim
        self.name = name or f"hashing-{dim}"

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)
