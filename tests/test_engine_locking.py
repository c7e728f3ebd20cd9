"""A second process-like opener of the same data dir: the embedded vector store is
single-writer, so hybrid search degrades to the legs it can open and says so."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ingest.pipeline import sync_paths
from rag.engine import Engine
from rag.errors import StoreLockedError
from rag.settings import load_settings


class HashingEmbedder:
    """Deterministic bag-of-words vectors (feature hashing): enough to fill a vector store."""

    name = "hashing-512"
    dim = 512

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


def test_hybrid_skips_a_locked_dense_leg_with_a_warning(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "gpu.md").write_text("# GPU\n\nollama serve listens on port 11434\n", encoding="utf-8")
    (notes / "git.md").write_text("# Git\n\ngit commit --amend fixes the last commit\n", encoding="utf-8")
    settings = load_settings(data_dir=tmp_path / "data")
    settings.embedding.model = "hashing"
    emb = HashingEmbedder()
    with Engine.open(settings, create=True, embedder=emb) as owner:
        sync_paths([notes], settings, owner.store)
        owner.sync()
        assert owner.search("ollama serve listens", k=1, mode="dense")[0].chunk.source == "gpu.md"
        with Engine.open(settings, embedder=emb) as other:
            hits = other.search("ollama serve listens", k=1, mode="hybrid")
            assert hits[0].chunk.source == "gpu.md"
            assert hits[0].scores["dense"] is None and hits[0].scores["sparse"] is not None
            assert len(other.warnings) == 1 and other.warnings[0].startswith("dense leg skipped")
            with pytest.raises(StoreLockedError):
                other.search("ollama serve listens", k=1, mode="dense")
