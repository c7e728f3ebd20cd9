"""`dense_coverage` in `rag search --json`, `rag ask --json` and the bodies of POST /v1/search and
POST /v1/ask: present (the share of the chunks the dense leg has embedded) only when a dense model is
configured, and the same whether the CLI answers itself or goes through a running server."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import rag.engine
from cli.main import cli
from cli.remote import owner_client
from rag.owner import Ownership
from rag.settings import Settings
from tests.test_api_common import HashingEmbedder, live_server

DENSE = {"RAG_EMBEDDING__MODEL": "hashing", "RAG_GRAPH__ENABLED": "false", "RAG_LLM__BACKEND": "none"}
SPARSE = {**DENSE, "RAG_EMBEDDING__MODEL": "none"}
QUESTION = "which port does ollama use?"


@pytest.fixture(autouse=True)
def _hashing_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dense leg of every engine in this process embeds with the hashing embedder."""
    make_leg = rag.engine.make_leg

    def hashing_leg(name: str, settings: Settings, *, embedder: Any = None) -> Any:
        return make_leg(name, settings, embedder=embedder or HashingEmbedder())

    monkeypatch.setattr(rag.engine, "make_leg", hashing_leg)


def json_of(data: Path, env: dict[str, str], *args: str) -> Any:
    res = CliRunner().invoke(cli, [*args, "--data-dir", str(data), "--json"], env=env)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _same(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without what differs from one run to the next (timings)."""
    return {k: v for k, v in body.items() if k not in ("took_ms", "timings_ms")}


def _settings(data: Path, model: str) -> Settings:
    settings = Settings(data_dir=data)
    settings.embedding.model = model
    settings.graph.enabled = False
    settings.llm.backend = "none"
    return settings


@pytest.fixture
def serving() -> Iterator[Any]:
    """``serving(data, model)``: a server owning ``data`` (as `rag serve` does), its URL."""
    with contextlib.ExitStack() as stack:

        def start(data: Path, model: str) -> str:
            url: str = stack.enter_context(live_server(_settings(data, model)))
            stack.enter_context(Ownership.acquire(data, "server", url=url, command="rag serve"))
            client = owner_client(_settings(data, model), "read", doing="search")
            assert client is not None and client.owner.url == url  # the CLI goes through it
            client.close()
            return url

        yield start


def test_dense_coverage_locally_and_through_a_server(tmp_path: Path, notes_dir: Path, serving: Any) -> None:
    data = tmp_path / "data"
    json_of(data, DENSE, "ingest", str(notes_dir))
    local_search = json_of(data, DENSE, "search", "ollama GPU", "-k", "3")
    local_ask = json_of(data, DENSE, "ask", QUESTION, "--no-llm")
    assert local_search["dense_coverage"] == 1.0 and local_ask["dense_coverage"] == 1.0
    assert list(local_search) == ["query", "mode", "took_ms", "hits", "dense_coverage"]
    assert list(local_ask)[-1] == "dense_coverage"

    url = serving(data, "hashing")
    served_search = json_of(data, DENSE, "search", "ollama GPU", "-k", "3")
    served_ask = json_of(data, DENSE, "ask", QUESTION, "--no-llm")
    assert _same(served_search) == _same(local_search) and list(served_search) == list(local_search)
    assert _same(served_ask) == _same(local_ask) and list(served_ask) == list(local_ask)
    with httpx.Client(base_url=url, trust_env=False, timeout=60) as http:
        assert http.post("/v1/search", json={"query": "ollama GPU", "k": 3}).json()["dense_coverage"] == 1.0
        assert (
            http.post("/v1/ask", json={"question": QUESTION, "no_llm": True}).json()["dense_coverage"] == 1.0
        )
        history = [
            {"role": "user", "content": "what is ollama?"},
            {"role": "assistant", "content": "A tool."},
        ]
        body = http.post("/v1/ask", json={"question": QUESTION, "no_llm": True, "history": history}).json()
        assert body["dense_coverage"] == 1.0
        assert http.get("/health").json()["index"]["dense_coverage"] == 1.0


def test_no_dense_model_no_dense_coverage(tmp_path: Path, notes_dir: Path, serving: Any) -> None:
    data = tmp_path / "data"
    json_of(data, SPARSE, "ingest", str(notes_dir))
    local_search = json_of(data, SPARSE, "search", "ollama GPU", "-k", "3")
    local_ask = json_of(data, SPARSE, "ask", QUESTION, "--no-llm")
    assert "dense_coverage" not in local_search and "dense_coverage" not in local_ask
    serving(data, "none")
    assert _same(json_of(data, SPARSE, "search", "ollama GPU", "-k", "3")) == _same(local_search)
    assert _same(json_of(data, SPARSE, "ask", QUESTION, "--no-llm")) == _same(local_ask)
