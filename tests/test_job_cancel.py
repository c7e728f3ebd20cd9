"""Cancelling a server job over HTTP: a queued job never runs; an ingest cancelled while the dense
leg embeds stops after its current batch, keeps what it committed searchable (chunk store, BMX),
keeps the batches it embedded, and the next ingest finishes the dense leg without re-embedding them.
Ctrl-C on `rag ingest` through the server cancels the server's job too."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from cli.remote import OwnerClient
from rag.owner import OwnerRecord
from rag.retrieval.legs import DENSE_BATCH
from rag.settings import Settings
from tests.hashing_embedder import HashingEmbedder
from tests.test_api_common import live_server
from tests.test_dense_later import _notes

#: seconds per passage: a batch of DENSE_BATCH passages takes about 1 s, as e5-small on 2 cores does
PER_TEXT_S = 0.03


class SlowEmbedder(HashingEmbedder):
    """A real dense leg at the pace of a small CPU; counts the passages it embedded."""

    def __init__(self) -> None:
        super().__init__(64, "slow-hashing-64")
        self.embedded = 0
        self.lock = threading.Lock()

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(PER_TEXT_S * len(texts))
        with self.lock:
            self.embedded += len(texts)
        return super().embed_passages(texts)


def _settings(data: Path) -> Settings:
    settings = Settings(data_dir=data)
    settings.embedding.model = "slow-hashing"
    settings.graph.enabled = False
    settings.llm.backend = "none"
    settings.ingest.workers = 1
    settings.api.publish_interval_s = 0.2
    return settings


def _wait(client: httpx.Client, job_id: str, until: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if until(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def _ended(job: dict[str, Any]) -> bool:
    return job["status"] not in ("queued", "running")


def test_cancel_an_ingest_while_the_dense_leg_embeds(tmp_path: Path) -> None:
    notes = _notes(tmp_path / "notes", n=40)
    settings = _settings(tmp_path / "d")
    slow = SlowEmbedder()
    with live_server(settings, embedder=slow) as url, httpx.Client(base_url=url, timeout=30) as client:
        job = client.post("/v1/ingest", json={"paths": [str(notes)]}).json()
        # the files are in; the dense leg has embedded its first batch (the job shows it)
        job = _wait(client, job["id"], lambda j: j["progress"].get("embedded", 0) >= DENSE_BATCH or _ended(j))
        assert job["status"] == "running", job
        total = job["progress"]["to_embed"]
        assert total > 3 * DENSE_BATCH
        # a search sees every file already: search first, dense later
        hits = client.post("/v1/search", json={"query": "zebrafish 端口", "k": 3, "mode": "sparse"}).json()
        assert hits["hits"][0]["source"] == "special.md"

        with slow.lock:
            before = slow.embedded
        asked = time.monotonic()
        reply = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert reply.status_code == 200 and reply.json()["id"] == job["id"]
        job = _wait(client, job["id"], _ended)
        stopped_s = time.monotonic() - asked
        after = slow.embedded

        # stopped within one batch: at most the batch under way was finished
        assert job["status"] == "failed" and job["error"]["type"] == "cancelled", job
        assert "cancelled" in job["error"]["message"] and job["error"]["hint"]
        assert after - before <= DENSE_BATCH, (before, after)
        assert stopped_s < PER_TEXT_S * DENSE_BATCH * 3 + 5
        assert after < total

        # consistent: the chunk store and BMX are published, the dense leg covers what it embedded
        health = client.get("/health").json()
        coverage = health["index"]["dense_coverage"]
        assert 0.0 < coverage < 1.0, health
        hits = client.post("/v1/search", json={"query": "zebrafish 端口", "k": 3}).json()
        assert hits["hits"][0]["source"] == "special.md" and 0.0 < hits["dense_coverage"] < 1.0
        # nothing embeds on its own after the cancel
        time.sleep(1.0)
        assert slow.embedded == after
        assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "failed"  # stays as it ended

        # the next ingest of the same folder finishes the dense leg, re-embedding nothing
        again = client.post("/v1/ingest", json={"paths": [str(notes)]}).json()
        again = _wait(client, again["id"], _ended)
        assert again["status"] == "done", again
        assert slow.embedded == total  # every chunk embedded once: the cancelled batches were kept
        health = client.get("/health").json()
        assert health["index"]["dense_coverage"] == 1.0


def test_cancel_a_queued_job_and_an_unknown_one(tmp_path: Path) -> None:
    notes = _notes(tmp_path / "notes", n=12)
    other = _notes(tmp_path / "other", n=2)
    settings = _settings(tmp_path / "d")
    slow = SlowEmbedder()
    with live_server(settings, embedder=slow) as url, httpx.Client(base_url=url, timeout=30) as client:
        first = client.post("/v1/ingest", json={"paths": [str(notes)]}).json()
        second = client.post("/v1/ingest", json={"paths": [str(other)]}).json()
        cancelled = client.post(f"/v1/jobs/{second['id']}/cancel").json()
        assert cancelled["status"] == "failed" and cancelled["error"]["type"] == "cancelled"
        assert cancelled["started_at"] is None  # it never ran
        assert _wait(client, first["id"], _ended)["status"] == "done"
        assert client.get(f"/v1/jobs/{second['id']}").json()["started_at"] is None
        sources = {d["source"] for d in client.get("/v1/documents").json()["documents"]}
        assert "note_00.md" in sources and not any(s.startswith("other") for s in sources)
        missing = client.post("/v1/jobs/job-0-nope/cancel")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"


def test_ctrl_c_on_an_ingest_through_the_server_cancels_its_job(tmp_path: Path) -> None:
    notes = _notes(tmp_path / "notes", n=40)
    settings = _settings(tmp_path / "d")
    slow = SlowEmbedder()
    with live_server(settings, embedder=slow) as url, httpx.Client(base_url=url, timeout=30) as client:
        owner = OwnerRecord(kind="server", pid=0, host="", since=time.time(), url=url)

        def progress(done: int, total: int, item: str) -> None:
            if slow.embedded >= DENSE_BATCH:  # in the dense phase: the user presses Ctrl-C
                raise KeyboardInterrupt

        with OwnerClient(owner, settings, "write") as remote, pytest.raises(KeyboardInterrupt):
            remote.ingest([notes], include=[], exclude=[], no_redact=False, progress=progress)
        # the client waited for the job to stop: it is cancelled on the server
        (job,) = [j for j in client.get("/v1/jobs").json()["jobs"] if j["kind"] == "ingest"]
        assert job["status"] == "failed" and job["error"]["type"] == "cancelled", job
        embedded = slow.embedded
        time.sleep(0.5)
        assert slow.embedded == embedded < job["progress"]["to_embed"]


def test_cancelling_takes_a_write_key(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app

    settings = _settings(tmp_path / "d")
    settings.api.read_key, settings.api.write_key = "reader", "writer"
    with TestClient(create_app(settings, embedder=SlowEmbedder())) as client:
        reader = client.post("/v1/jobs/job-1-x/cancel", headers={"Authorization": "Bearer reader"})
        assert reader.status_code == 403 and reader.json()["error"]["type"] == "forbidden"
        writer = client.post("/v1/jobs/job-1-x/cancel", headers={"Authorization": "Bearer writer"})
        assert writer.status_code == 404
        spec = client.get("/openapi.json", headers={"Authorization": "Bearer reader"}).json()
        assert "/v1/jobs/{job_id}/cancel" in spec["paths"]
