"""Search first, dense later: searches work as soon as the chunk store and BMX are committed,
the dense leg embeds afterwards in batches that survive a kill, and hybrid search does not rank
chunks without a vector below where a sparse-only search puts them."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.routers.health import index_health
from ingest.publish import ingest_and_publish
from rag.engine import Engine
from rag.retrieval.legs import DENSE_BATCH, DenseLeg, fill_uncovered, read_dense_progress
from rag.serving import ServingEngine, ServingWriter
from rag.settings import Settings
from tests.hashing_embedder import HashingEmbedder

REPO = Path(__file__).resolve().parents[1]
WORDS = [
    "docker",
    "ollama",
    "GPU",
    "显存",
    "模型",
    "端口",
    "11434",
    "qdrant",
    "检索",
    "向量",
    "nginx",
    "cuda",
]


def _notes(root: Path, n: int = 20) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        body = "\n\n".join(
            f"## 小节 {j}\n\n"
            + " ".join(WORDS[(i * 7 + j * 3 + w) % len(WORDS)] for w in range(90))
            + f" note{i}"
            for j in range(4)
        )
        (root / f"note_{i:02d}.md").write_text(f"# 笔记 {i}\n\n{body}\n", encoding="utf-8")
    (root / "special.md").write_text("# 特别\n\nzebrafish 端口 是 43210。\n", encoding="utf-8")
    return root


def _settings(data: Path) -> Settings:
    settings = Settings(data_dir=data)
    settings.embedding.model = "hashing"
    settings.graph.enabled = False
    return settings


class HookEmbedder(HashingEmbedder):
    """Calls ``hook`` once, at the first passage batch (the dense phase has begun)."""

    def __init__(self, hook: Callable[[], None]) -> None:
        super().__init__(64)
        self.hook: Callable[[], None] | None = hook

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return super().embed_passages(texts)


def test_search_in_the_server_during_its_dense_phase(tmp_path: Path) -> None:
    notes = _notes(tmp_path / "notes")
    settings = _settings(tmp_path / "d")
    seen: dict[str, Any] = {}

    def search_meanwhile() -> None:
        def run() -> None:
            hits = engine.search("zebrafish 端口", k=5)
            seen["hits"] = [h.as_dict() for h in hits]
            seen["status"] = engine.status()

        reader = threading.Thread(target=run)
        reader.start()
        reader.join(30)  # the writer embeds outside the lock: a search is not held back by it
        assert not reader.is_alive()

    engine = ServingEngine.open_serving(settings, embedder=HookEmbedder(search_meanwhile))
    writer = ServingWriter(settings.data_dir)
    try:
        outcome = ingest_and_publish([notes], settings, engine, writer)
        after = engine.status()
    finally:
        writer.close()
        engine.close()
    hits = seen["hits"]
    assert hits and hits[0]["source"] == "special.md"
    assert hits[0]["scores"]["dense"] is None  # not embedded yet: the contract's null
    assert seen["status"]["dense_coverage"] == 0.0
    assert after["dense_coverage"] == 1.0 and after["legs"]["dense"]["in_sync"]
    assert outcome.report.phases["embed"] > 0
    index, vectors = index_health(seen["status"], settings)
    assert index["dense_coverage"] == 0.0 and vectors["status"] == "building"
    index, vectors = index_health(after, settings)
    assert vectors["status"] == "ok" and vectors["coverage"] == 1.0


def test_search_in_another_process_during_the_dense_phase(tmp_path: Path) -> None:
    notes = _notes(tmp_path / "notes")
    settings = _settings(tmp_path / "d")
    seen: dict[str, Any] = {}

    def search_elsewhere() -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "RAG_EMBEDDING__MODEL": "hashing"}
        env["RAG_GRAPH__ENABLED"] = "false"
        cmd = [sys.executable, "-m", "cli.main", "search", "zebrafish 端口", "--mode", "sparse"]
        proc = subprocess.run(
            [*cmd, "--data-dir", str(settings.data_dir), "--json"], env=env, capture_output=True, timeout=120
        )
        seen["rc"], seen["out"], seen["err"] = proc.returncode, proc.stdout, proc.stderr

    with Engine.open(settings, create=True, embedder=HookEmbedder(search_elsewhere)) as engine:
        ingest_and_publish([notes], settings, engine, engine.store)
    assert seen["rc"] == 0, seen["err"]
    body = json.loads(seen["out"])
    assert body["hits"][0]["source"] == "special.md"
    assert body["dense_coverage"] == 0.0  # from the progress the ingest writes


def test_resume_after_a_kill_in_the_dense_phase(tmp_path: Path) -> None:
    notes = _notes(tmp_path / "notes", n=30)
    data = tmp_path / "d"
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent(
            """
            import sys, time
            from pathlib import Path
            from ingest.publish import ingest_and_publish
            from rag.engine import Engine
            from tests.test_dense_later import _settings
            from tests.hashing_embedder import HashingEmbedder

            class Slow(HashingEmbedder):
                def embed_passages(self, texts):
                    time.sleep(0.03 * len(texts))
                    return super().embed_passages(texts)

            settings = _settings(Path(sys.argv[2]))
            with Engine.open(settings, create=True, embedder=Slow(64)) as engine:
                ingest_and_publish([Path(sys.argv[1])], settings, engine, engine.store)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(driver), str(notes), str(data)], env=env)
    cache_db = data / "dense" / "embedding-cache.sqlite3"

    def cached() -> int:
        if not cache_db.exists():
            return 0
        with sqlite3.connect(cache_db, timeout=10) as db:
            try:
                return int(db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    deadline = time.monotonic() + 120
    while cached() < 2 * DENSE_BATCH and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    done_before = cached()
    settings = _settings(data)

    # killed half way through the dense phase: the chunk store and BMX are complete and searchable
    with Engine.open(settings) as engine:
        total = engine.store.count_chunks()
        assert 2 * DENSE_BATCH <= done_before < total
        assert engine.search("zebrafish 端口", k=3, mode="sparse")[0].chunk.source == "special.md"
        assert 0.0 <= engine.dense_coverage() < 1.0  # type: ignore[operator]

    counted: list[int] = []

    class Counting(HashingEmbedder):
        def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
            counted.append(len(texts))
            return super().embed_passages(texts)

    with Engine.open(settings, create=True, embedder=Counting(64)) as engine:
        outcome = ingest_and_publish([notes], settings, engine, engine.store)
        assert outcome.report.unchanged == 31 and outcome.report.added == 0
        leg = engine.leg("dense")
        assert isinstance(leg, DenseLeg)
        assert leg.vectors.ids() == engine.store.chunk_ids()
        assert engine.dense_coverage() == 1.0
        unique = len({c.index_text() for c in engine.store.get_chunks(sorted(engine.store.chunk_ids()))})
    # the next run embedded only what the killed one had not committed
    assert sum(counted) == unique - done_before
    assert read_dense_progress(data)["embedded"] == total


def _ranking(engine: Engine, query: str, mode: str, k: int = 20) -> list[tuple[str, float | None]]:
    return [(h.chunk.chunk_id, h.scores["dense"]) for h in engine.search(query, k=k, mode=mode)]  # type: ignore[arg-type]


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_hybrid_with_part_of_the_dense_leg_keeps_the_sparse_order_of_the_rest(
    tmp_path: Path, fusion: str
) -> None:
    notes = _notes(tmp_path / "notes")
    settings = _settings(tmp_path / "d")
    settings.retrieval.fusion = fusion  # type: ignore[assignment]
    settings.retrieval.weight_dense = 0.5
    queries = ["docker 端口", "ollama GPU 显存", "qdrant 检索 note3", "zebrafish"]
    with Engine.open(settings, create=True, embedder=HashingEmbedder(64)) as engine:
        ingest_and_publish([notes], settings, engine, engine.store)
        leg = engine.leg("dense")
        assert isinstance(leg, DenseLeg)
        deep = {q: [cid for cid, _ in _ranking(engine, q, "sparse", k=1000)] for q in queries}
        sparse = {q: ids[:20] for q, ids in deep.items()}
        sparse_score = {
            q: {h.chunk.chunk_id: h.scores["sparse"] for h in engine.search(q, k=1000, mode="sparse")}
            for q in queries
        }
        ids = sorted(engine.store.chunk_ids())

        # no vector yet: hybrid is the sparse-only ranking
        leg.vectors.delete(ids)
        leg._ids, leg.generation = None, None
        assert engine.dense_coverage() == 0.0
        for q in queries:
            assert [cid for cid, _ in _ranking(engine, q, "hybrid")] == sparse[q]

        # half embedded: chunks without a vector keep their sparse order and report no dense score
        half = set(ids[::2])
        leg.vectors.upsert(sorted(half), leg.cache.embed_passages(leg.embedder, _texts(engine, sorted(half))))
        leg._ids = None
        assert engine.dense_coverage() == pytest.approx(len(half) / len(ids), abs=0.01)
        for q in queries:
            hybrid = _ranking(engine, q, "hybrid")
            rest = [cid for cid, _ in hybrid if cid not in half]
            # sparse order, up to exact ties in the sparse score (tied chunks may come either way)
            rest_scores = [sparse_score[q][cid] for cid in rest]
            assert rest_scores == sorted(rest_scores, reverse=True)
            assert all(dense is None for cid, dense in hybrid if cid not in half)


def _texts(engine: Engine, ids: list[str]) -> list[str]:
    return [c.index_text() for c in engine.store.get_chunks(ids)]


def test_fill_uncovered_borrows_the_dense_score_at_the_same_rank() -> None:
    per_leg = {"sparse": {"a": 3.0, "b": 2.0, "c": 1.0}, "dense": {"c": 0.9, "d": 0.5}}
    out = fill_uncovered(per_leg, embedded={"c", "d"})
    assert out["dense"] == {"c": 0.9, "d": 0.5, "a": 0.9, "b": 0.5}
    assert out["sparse"] is per_leg["sparse"]
    assert fill_uncovered({"sparse": {"a": 1.0}, "dense": {}}, embedded=set()) == {"sparse": {"a": 1.0}}
