"""`dense_coverage` in the `final` event of the streamed answer (POST /v1/ask with `stream`): the same
value as in the plain answer's body, present only when a dense model is configured."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag.settings import Settings
from tests.hashing_embedder import HashingEmbedder
from tests.test_api_common import live_server
from tests.test_dense_later import _notes

QUESTION = "zebrafish 端口是多少？"


def _settings(data: Path, model: str) -> Settings:
    settings = Settings(data_dir=data)
    settings.embedding.model = model
    settings.graph.enabled = False
    settings.llm.backend = "none"
    settings.ingest.workers = 1
    return settings


def _events(http: httpx.Client, payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    with http.stream("POST", "/v1/ask", json={**payload, "stream": True}) as res:
        assert res.status_code == 200
        text = res.read().decode()
    out = []
    for block in text.strip().split("\n\n"):
        head, data = block.split("\n", 1)
        out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def _ingest(http: httpx.Client, folder: Path) -> None:
    job = http.post("/v1/ingest", json={"paths": [str(folder)]}).json()
    deadline = time.monotonic() + 60
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = http.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "done", job


@pytest.mark.parametrize("model", ["hashing", "none"])
def test_final_event_carries_dense_coverage(tmp_path: Path, model: str) -> None:
    notes = _notes(tmp_path / "notes", n=3)
    settings = _settings(tmp_path / "d", model)
    embedder = HashingEmbedder(64) if model != "none" else None
    with live_server(settings, embedder=embedder) as url, httpx.Client(base_url=url, timeout=60) as http:
        _ingest(http, notes)
        plain = http.post("/v1/ask", json={"question": QUESTION, "no_llm": True}).json()
        events = _events(http, {"question": QUESTION, "no_llm": True})
        history = [{"role": "user", "content": "ollama?"}, {"role": "assistant", "content": "A tool."}]
        follow_up = _events(http, {"question": QUESTION, "no_llm": True, "history": history})
    for stream in (events, follow_up):
        name, final = stream[-1]
        assert name == "final"
        if model == "none":
            assert "dense_coverage" not in final and "dense_coverage" not in plain
        else:
            assert final["dense_coverage"] == plain["dense_coverage"] == 1.0
            # only the final event carries it
            assert all("dense_coverage" not in data for _, data in stream[:-1])
    assert events[-1][1]["answer"] == plain["answer"]
