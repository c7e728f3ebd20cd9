"""Shared fixtures. Every data dir lives under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.settings import Settings


@pytest.fixture(autouse=True)
def _sparse_only_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI runs in tests skip the dense leg unless a test names a model (the real e5 model is slow on CPU)."""
    monkeypatch.setenv("RAG_EMBEDDING__MODEL", "none")
    monkeypatch.delenv("RAG_DATA_DIR", raising=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def notes_dir(tmp_path: Path) -> Path:
    """A small mixed notes folder written by the test."""
    root = tmp_path / "notes"
    (root / "docker").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "docker" / "gpu.md").write_text(
        "# Docker 封装\n\n## 用 GPU 启动 Ollama\n\n用 `docker run --gpus all` 启动 ollama，端口 11434。\n",
        encoding="utf-8",
    )
    (root / "todo.txt").write_text(
        "Remember: ollama ps shows whether the model runs on the GPU.\n", encoding="utf-8"
    )
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".git" / "notes.md").write_text("# hidden, must be skipped\n")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    return root
