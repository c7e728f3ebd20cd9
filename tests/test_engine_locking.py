"""A second process-like opener of the same data dir: the embedded vector store is
single-writer, so hybrid search degrades to the legs it can open and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.pipeline import sync_paths
from rag.engine import Engine
from rag.errors import StoreLockedError
from rag.settings import load_settings
from tests.hashing_embedder import HashingEmbedder


def test_hybrid_skips_a_locked_dense_leg_with_a_warning(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "gpu.md").write_text("# GPU\n\nollama serve listens on port 11434\n", encoding="utf-8")
    (notes / "git.md").write_text("# Git\n\ngit commit --amend fixes the last commit\n", encoding="utf-8")
    settings = load_settings(data_dir=tmp_path / "data")
    settings.embedding.model = "hashing"
    emb = HashingEmbedder(512)
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
