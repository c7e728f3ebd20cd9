"""The embedding settings: the Ollama server, its timeout and the e5-small CPU runtime, from env vars."""

from __future__ import annotations

import pytest

from rag.settings import EmbeddingSettings, Settings


def test_settings_fields_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_EMBEDDING__MODEL", "ollama:bge-m3")
    monkeypatch.setenv("RAG_EMBEDDING__URL", "http://gpu-box:11434")
    monkeypatch.setenv("RAG_EMBEDDING__TIMEOUT_S", "30")
    monkeypatch.setenv("RAG_EMBEDDING__RUNTIME", "onnx-int8")
    e = Settings().embedding
    assert (e.model, e.url, e.timeout_s, e.runtime) == (
        "ollama:bge-m3",
        "http://gpu-box:11434",
        30.0,
        "onnx-int8",
    )
    defaults = EmbeddingSettings.model_validate({})
    assert (defaults.url, defaults.runtime) == (None, "auto")
