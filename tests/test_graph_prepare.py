"""``GraphLeg.prepare``: the slow part of a sync done beforehand, with nothing written.

A prepared sync must give the very graph a plain sync gives (row for row, as
``GraphStore.snapshot`` compares), extract nothing itself, and fall back to the
full work when the store moved on in between; searches meanwhile see the graph
as it was.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from api.serving import ServingEngine, SnapshotStore
from ingest.pipeline import sync_paths
from rag.errors import LLMError
from rag.graph import GraphLeg, RuleExtractor
from rag.graph import leg as leg_module
from rag.graph.extract import Mention
from rag.graph.llm import LLMExtractor
from rag.store import ChunkStore
from tests.test_graph_sync import from_scratch, ingest, settings_for, write_notes


class CountingExtractor(RuleExtractor):
    """The rule extractor, counting the chunks it extracts (``query_keys`` not included)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def extract(self, text: str) -> list[Mention]:
        self.calls += 1
        return super().extract(text)

    def query_keys(self, text: str) -> list[str]:
        calls = self.calls
        try:
            return super().query_keys(text)
        finally:
            self.calls = calls


class FakeLLM:
    """A deterministic stand-in for :class:`LLMExtractor`: names the known words present in the
    text; fails for texts containing ``fail_on``."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on
        self.calls = 0

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": "fake"}

    def cache_key(self, text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def extract(self, text: str) -> list[str]:
        self.calls += 1
        if self.fail_on is not None and self.fail_on in text:
            raise LLMError("the model is confused")
        return [name for name in ("显存", "上下文长度", "向量数据库") if name in text]

    def close(self) -> None:
        pass


def change_notes(root: Path) -> None:
    (root / "ollama.md").write_text(
        "# Ollama 笔记\n\n`ollama list` 列出模型。Ollama 也可以用 Podman 启动，上下文长度另设。\n",
        encoding="utf-8",
    )
    (root / "embed.md").unlink()
    (root / "new.md").write_text(
        "# 新笔记\n\nKubernetes 调度 GPU，显存不够时用 Qdrant 的量化。\n", encoding="utf-8"
    )


def make_leg(directory: Path, llm: FakeLLM | None = None) -> tuple[GraphLeg, CountingExtractor]:
    extractor = CountingExtractor()
    return GraphLeg(directory, extractor, llm=cast(LLMExtractor | None, llm)), extractor


def test_prepared_sync_builds_the_same_graph_and_extracts_nothing(tmp_path: Path) -> None:
    root = write_notes(tmp_path / "notes")
    engine = ingest(settings_for(tmp_path / "data"), root)
    plain, _ = make_leg(tmp_path / "plain")
    prepared, extractor = make_leg(tmp_path / "prepared")
    try:
        for step in range(2):  # the first sync, then one after a change and a delete
            if step:
                change_notes(root)
                sync_paths([root], engine.settings, engine.store)
            expected = plain.sync(engine.store)
            before = prepared.graph.snapshot()
            extractor.calls = 0
            prepared.prepare(engine.store)
            assert extractor.calls == expected.added > 0
            assert prepared.graph.snapshot() == before  # prepare writes nothing
            assert prepared.generation != engine.store.generation()
            got = prepared.sync(engine.store)
            assert extractor.calls == expected.added  # sync only wrote what prepare extracted
            assert (got.added, got.removed) == (expected.added, expected.removed)
            assert prepared.graph.snapshot() == plain.graph.snapshot()
            assert prepared.graph.snapshot() == from_scratch(engine, tmp_path / f"fresh{step}")
            assert prepared.generation == plain.generation == engine.store.generation()
        assert expected.removed > 0
        # in step: prepare and sync have nothing to do
        prepared.prepare(engine.store)
        again = prepared.sync(engine.store)
        assert (again.added, again.removed, extractor.calls) == (0, 0, expected.added)
    finally:
        plain.close()
        prepared.close()
        engine.close()


def scratch(store: ChunkStore, directory: Path) -> dict[str, Any]:
    leg = GraphLeg(directory, RuleExtractor())
    try:
        leg.sync(store)
        return leg.graph.snapshot()
    finally:
        leg.close()


def test_a_store_change_after_prepare_is_not_missed(tmp_path: Path) -> None:
    root = write_notes(tmp_path / "notes")
    settings = settings_for(tmp_path / "data", enabled=False)
    engine = ingest(settings, root)
    leg, extractor = make_leg(tmp_path / "graph")
    try:
        leg.sync(engine.store)
        (root / "docker" / "gpu.md").write_text("# GPU\n\n用 nvidia-smi 看显存。\n", encoding="utf-8")
        sync_paths([root], settings, engine.store)
        leg.prepare(engine.store)
        change_notes(root)  # the store moves on after prepare
        sync_paths([root], settings, engine.store)
        extractor.calls = 0
        result = leg.sync(engine.store)
        assert extractor.calls == result.added > 0  # the plan was for another generation: redone
        assert leg.graph.snapshot() == from_scratch(engine, tmp_path / "fresh")
        assert leg.generation == engine.store.generation()
    finally:
        leg.close()
        engine.close()


def test_a_sync_in_between_makes_the_plan_stale(tmp_path: Path) -> None:
    root = write_notes(tmp_path / "notes")
    settings = settings_for(tmp_path / "data", enabled=False)
    engine = ingest(settings, root)
    leg, _ = make_leg(tmp_path / "graph")
    try:
        leg.sync(engine.store)
        (root / "docker" / "gpu.md").write_text("# GPU\n\n用 nvidia-smi 看显存。\n", encoding="utf-8")
        sync_paths([root], settings, engine.store)
        pinned = SnapshotStore(settings.data_dir)
        try:
            leg.prepare(pinned)  # a plan from the graph as it is now to `pinned`
            change_notes(root)
            sync_paths([root], settings, engine.store)
            leg.sync(engine.store)  # the graph moves past that plan
            assert leg.graph.snapshot() == from_scratch(engine, tmp_path / "fresh")
            leg.sync(pinned)  # back to the pinned snapshot: diffed again, not the stale plan
            assert leg.graph.snapshot() == scratch(pinned, tmp_path / "pinned")
            assert leg.generation == pinned.generation() < engine.store.generation()
        finally:
            pinned.close()
    finally:
        leg.close()
        engine.close()


def test_a_capped_prepare_leaves_the_rest_to_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_notes(tmp_path / "notes")
    engine = ingest(settings_for(tmp_path / "data", enabled=False), root)
    leg, extractor = make_leg(tmp_path / "graph")
    try:
        monkeypatch.setattr(leg_module, "PREPARE_MAX_CHUNKS", 2)
        leg.prepare(engine.store)
        assert extractor.calls == 2
        result = leg.sync(engine.store)
        assert extractor.calls == result.added == engine.store.count_chunks() > 2
        assert leg.graph.snapshot() == from_scratch(engine, tmp_path / "fresh")
    finally:
        leg.close()
        engine.close()


def test_a_prepared_sync_is_all_or_nothing(tmp_path: Path) -> None:
    root = write_notes(tmp_path / "notes")
    engine = ingest(settings_for(tmp_path / "data", enabled=False), root)
    leg, _ = make_leg(tmp_path / "graph")
    try:
        leg.sync(engine.store)
        old, old_generation = leg.graph.snapshot(), leg.generation
        change_notes(root)
        sync_paths([root], engine.settings, engine.store)
        leg.prepare(engine.store)

        def stop(done: int, total: int, label: str) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            leg.sync(engine.store, progress=stop)
        assert leg.graph.snapshot() == old and leg.generation == old_generation  # rolled back whole
        leg.sync(engine.store)
        assert leg.graph.snapshot() == from_scratch(engine, tmp_path / "fresh")
    finally:
        leg.close()
        engine.close()


def test_prepare_with_the_llm_matches_a_plain_sync(tmp_path: Path) -> None:
    root = write_notes(tmp_path / "notes")
    engine = ingest(settings_for(tmp_path / "data", enabled=False), root)
    plain_llm, prepared_llm = FakeLLM(fail_on="docker commit"), FakeLLM(fail_on="docker commit")
    plain, _ = make_leg(tmp_path / "plain", plain_llm)
    prepared, _ = make_leg(tmp_path / "prepared", prepared_llm)
    try:
        for step in range(2):
            if step:
                change_notes(root)
                sync_paths([root], engine.settings, engine.store)
                plain_llm.fail_on = prepared_llm.fail_on = None  # the failed chunk is retried now
            plain.sync(engine.store)
            before = prepared.graph.snapshot()
            prepared.prepare(engine.store)
            calls = prepared_llm.calls
            assert calls > 0 and prepared.graph.snapshot() == before
            prepared.sync(engine.store)
            assert prepared_llm.calls == calls  # the model was asked during prepare only
            assert plain_llm.calls == prepared_llm.calls
            assert prepared.graph.snapshot() == plain.graph.snapshot()
            assert prepared.graph.chunk_ids(llm="failed") == plain.graph.chunk_ids(llm="failed")
            assert prepared.llm_failed == plain.llm_failed == (1 - step)
        snap = prepared.graph.snapshot()
        assert "显存" in snap["entities"] and "上下文长度" in snap["entities"]
        assert prepared.graph.chunk_ids(llm="ok") == engine.store.chunk_ids()
    finally:
        plain.close()
        prepared.close()
        engine.close()


def test_llm_answers_are_cached_by_the_sync_not_by_prepare(tmp_path: Path) -> None:
    root = write_notes(tmp_path / "notes")
    engine = ingest(settings_for(tmp_path / "data", enabled=False), root)
    llm = FakeLLM()
    leg, _ = make_leg(tmp_path / "graph", llm)
    try:
        digests = [
            llm.cache_key(c.index_text()) for c in engine.store.get_chunks(sorted(engine.store.chunk_ids()))
        ]
        leg.prepare(engine.store)
        assert all(leg.graph.cached_llm(d) is None for d in digests)
        leg.sync(engine.store)
        assert all(leg.graph.cached_llm(d) is not None for d in digests)
    finally:
        leg.close()
        engine.close()


def test_searches_during_prepare_see_the_old_graph(tmp_path: Path) -> None:
    root = write_notes(tmp_path / "notes")
    settings = settings_for(tmp_path / "data", enabled=False)
    engine = ingest(settings, root)
    started, go = threading.Event(), threading.Event()

    class PausingExtractor(RuleExtractor):
        """Stops the writer thread's first extraction until told to go on."""

        def extract(self, text: str) -> list[Mention]:
            if threading.current_thread() is not threading.main_thread() and not started.is_set():
                started.set()
                assert go.wait(30)
            return super().extract(text)

    leg = GraphLeg(tmp_path / "graph", PausingExtractor())
    try:
        leg.sync(engine.store)
        old = leg.graph.snapshot()
        old_hits = leg.search("Ollama 的端口", 10)
        assert old_hits and leg.search("Kubernetes", 10) == {}
        change_notes(root)
        sync_paths([root], settings, engine.store)
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                leg.prepare(engine.store)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            assert started.wait(30)
            # the writer is in the middle of prepare: searches see the graph as it was
            assert leg.search("Kubernetes", 10) == {}
            assert leg.search("Ollama 的端口", 10) == old_hits
            assert leg.graph.snapshot() == old
        finally:
            go.set()
            thread.join(30)
        assert not errors and not thread.is_alive()
        assert leg.graph.snapshot() == old  # prepared, still not written
        leg.sync(engine.store)
        assert leg.search("Kubernetes", 10) != {}
        assert leg.graph.snapshot() == from_scratch(engine, tmp_path / "fresh")
    finally:
        leg.close()
        engine.close()


def test_publish_extracts_entities_outside_the_write_lock(tmp_path: Path) -> None:
    root = write_notes(tmp_path / "notes")
    settings = settings_for(tmp_path / "data")
    settings.ingest.workers = 1
    with ChunkStore(settings.data_dir) as store:
        sync_paths([root], settings, store)
    engine = ServingEngine.open_serving(settings)
    try:
        leg = engine.leg("graph")
        assert isinstance(leg, GraphLeg)
        under_lock: list[bool] = []
        extract = leg.extractor.extract

        def watched(text: str) -> list[Mention]:
            under_lock.append(engine.lock._writer == threading.get_ident())
            return extract(text)

        leg.extractor.extract = watched  # type: ignore[method-assign]
        for step in range(2):
            if step:
                change_notes(root)
                with ChunkStore(settings.data_dir) as store:
                    sync_paths([root], settings, store)
            under_lock.clear()
            assert engine.publish() is not None
            assert under_lock and not any(under_lock)
            assert leg.graph.snapshot() == from_scratch(engine, tmp_path / f"fresh{step}")
            assert not engine.behind()
    finally:
        engine.close()
