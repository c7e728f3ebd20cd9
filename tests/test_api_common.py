"""Helpers for the API tests (no tests here): indexed settings, a live uvicorn server, job polling."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from rag.settings import Settings
from tests.answer_corpus import index_notes
from tests.hashing_embedder import HashingEmbedder as _Hashing

MODEL = "stub-model"
QUESTION = "Which port does Ollama listen on?"


def api_settings(
    tmp_path: Path, llm_url: str = "http://127.0.0.1:9", *, graph: bool = False, **api: Any
) -> Settings:
    """The answer-test notes indexed sparse-only (plus the entity graph when ``graph``) under
    ``tmp_path``, with API and LLM settings for tests."""
    settings = index_notes(tmp_path, graph={"enabled": graph})
    settings.llm.url = llm_url
    settings.llm.model = MODEL
    settings.llm.retries = 0
    settings.ingest.workers = 1
    settings.api.publish_interval_s = 0.05
    for key, value in api.items():
        setattr(settings.api, key, value)
    return settings


def HashingEmbedder() -> _Hashing:
    """A real dense leg without a model (see tests/hashing_embedder.py)."""
    return _Hashing(64, "api-hashing-64")


def wait_job(client: httpx.Client | Any, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


@contextlib.contextmanager
def live_server(settings: Settings, **kwargs: Any) -> Iterator[str]:
    """``create_app(settings)`` under a real uvicorn on 127.0.0.1 (a free port), in a thread."""
    import uvicorn

    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (else Nagle adds ~40 ms a reply)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings, **kwargs),
        log_level="warning",
        log_config=None,
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
