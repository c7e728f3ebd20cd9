"""The graph kept in step with the chunk store: ingest, change, delete, interrupt, rebuild.

After every step the incrementally maintained graph must equal, row for row, a
graph built from scratch from the same store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.pipeline import sync_paths
from rag.engine import Engine
from rag.graph import GraphLeg, RuleExtractor
from rag.graph import leg as leg_module
from rag.graph.normalize import AliasTable
from rag.settings import Settings


def write_notes(root: Path) -> Path:
    (root / "docker").mkdir(parents=True)
    (root / "docker" / "gpu.md").write_text(
        "# Docker 封装\n\n## 用 GPU 启动 Ollama\n\n"
        "用 `docker run --gpus all -p 11434:11434 ollama/ollama` 启动，容器里的模型放在显存。\n\n"
        "## 保存镜像\n\n用 `docker commit` 把容器保存为镜像，再用 `docker save` 导出。\n",
        encoding="utf-8",
    )
    (root / "ollama.md").write_text(
        "# Ollama 笔记\n\n`ollama ps` 查看模型是否在 GPU 上。上下文长度用 `options.num_ctx` 设置。\n\n"
        "Ollama listens on port 11434. The HF mirror hosts Qwen2-7B-Instruct.\n",
        encoding="utf-8",
    )
    (root / "embed.md").write_text(
        "# Embedding\n\n用 sentence-transformers 加载 BAAI/bge-m3，向量数据库用 Qdrant，端口 6333。\n",
        encoding="utf-8",
    )
    return root


def settings_for(data: Path, **graph: object) -> Settings:
    return Settings(data_dir=data, embedding={"model": "none"}, graph=graph)  # type: ignore[arg-type]


def ingest(settings: Settings, root: Path) -> Engine:
    engine = Engine.open(settings, create=True)
    sync_paths([root], settings, engine.store)
    engine.sync()
    return engine


def from_scratch(engine: Engine, tmp: Path, aliases: AliasTable | None = None) -> dict:
    fresh = GraphLeg(tmp, RuleExtractor(aliases))
    try:
        fresh.sync(engine.store)
        return fresh.graph.snapshot()
    finally:
        fresh.close()


def graph_of(engine: Engine) -> GraphLeg:
    leg = engine.leg("graph")
    assert isinstance(leg, GraphLeg)
    return leg


def test_change_and_delete_leave_nothing_stale(tmp_path: Path) -> None:
    root = write_notes(tmp_path / "notes")
    settings = settings_for(tmp_path / "data")
    engine = ingest(settings, root)
    try:
        leg = graph_of(engine)
        snap = leg.graph.snapshot()
        assert snap == from_scratch(engine, tmp_path / "fresh0")
        assert snap["chunks"] == engine.store.chunk_ids()
        assert {"qdrant", "dockercommit", "ollamaps", "11434", "6333"} <= set(snap["entities"])
        assert snap["entities"]["11434"] == 2  # two chunks name the port
        assert leg.generation == engine.store.generation()

        # change a file: its old entities go, the new ones come, shared counts follow
        (root / "ollama.md").write_text(
            "# Ollama 笔记\n\n`ollama list` 列出模型。Ollama 也可以用 Podman 启动。\n", encoding="utf-8"
        )
        sync_paths([root], settings, engine.store)
        result = engine.sync(["graph"])["graph"]
        assert result.added >= 1 and result.removed >= 1
        snap = leg.graph.snapshot()
        assert snap == from_scratch(engine, tmp_path / "fresh1")
        assert "ollamaps" not in snap["entities"] and "optionsnumctx" not in snap["entities"]
        assert "podman" in snap["entities"] and "ollamalist" in snap["entities"]
        assert snap["entities"]["11434"] == 1
        assert not any("ollamaps" in pair for pair in snap["edges"])

        # delete a file
        (root / "embed.md").unlink()
        sync_paths([root], settings, engine.store)
        engine.sync(["graph"])
        snap = leg.graph.snapshot()
        assert snap == from_scratch(engine, tmp_path / "fresh2")
        assert "qdrant" not in snap["entities"] and "6333" not in snap["entities"]
        assert not any("qdrant" in pair for pair in snap["edges"])

        # nothing changed: nothing to do
        again = engine.sync(["graph"])["graph"]
        assert (again.added, again.removed) == (0, 0)
    finally:
        engine.close()


def test_edge_weights_count_chunks_where_both_are_salient(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    root.mkdir()
    for i in range(3):
        (root / f"n{i}.md").write_text(f"# Note {i}\n\nQdrant 和 Ollama 一起部署。\n", encoding="utf-8")
    (root / "solo.md").write_text("# Solo\n\nQdrant 单独部署。\n", encoding="utf-8")
    engine = ingest(settings_for(tmp_path / "data"), root)
    try:
        snap = graph_of(engine).graph.snapshot()
        assert snap["edges"][("ollama", "qdrant")] == 3
        assert snap["edges"][("qdrant", "部署")] == 4
        assert snap["entities"]["qdrant"] == 4 and snap["entities"]["ollama"] == 3
        (root / "n0.md").unlink()
        sync_paths([root], engine.settings, engine.store)
        engine.sync(["graph"])
        snap = graph_of(engine).graph.snapshot()
        assert snap["edges"][("ollama", "qdrant")] == 2 and snap["edges"][("qdrant", "部署")] == 3
    finally:
        engine.close()


def test_an_interrupted_sync_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_notes(tmp_path / "notes")
    settings = settings_for(tmp_path / "data")
    engine = Engine.open(settings, create=True)
    try:
        sync_paths([root], settings, engine.store)
        monkeypatch.setattr(leg_module, "RULES_BATCH", 2)

        def stop(done: int, total: int, label: str) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            engine.sync(["graph"], progress=stop)
        leg = graph_of(engine)
        partial = leg.graph.chunk_ids()
        assert len(partial) == 2 and leg.generation is None  # one batch committed, not marked in step
        engine.sync(["graph"])
        assert leg.graph.snapshot() == from_scratch(engine, tmp_path / "fresh")
        assert leg.generation == engine.store.generation()
    finally:
        engine.close()


def test_changing_the_alias_table_rebuilds(tmp_path: Path) -> None:
    root = write_notes(tmp_path / "notes")
    data = tmp_path / "data"
    engine = ingest(settings_for(data), root)
    try:
        assert "hf" in graph_of(engine).graph.snapshot()["entities"]
    finally:
        engine.close()
    (data / "aliases.toml").write_text('[aliases]\n"Hugging Face" = ["HF"]\n', encoding="utf-8")
    engine = Engine.open(settings_for(data))
    try:
        leg = graph_of(engine)
        assert leg.generation is None and leg.graph.count("chunks") == 0  # fingerprint changed: reset
        engine.sync(["graph"])
        snap = leg.graph.snapshot()
        assert "huggingface" in snap["entities"] and "hf" not in snap["entities"]
        table = AliasTable.from_mapping({"Hugging Face": ["HF"]})
        assert snap == from_scratch(engine, tmp_path / "fresh", table)
    finally:
        engine.close()
    # same table, reopened: kept as it is
    engine = Engine.open(settings_for(data))
    try:
        assert graph_of(engine).generation == engine.store.generation()
    finally:
        engine.close()


def test_disabled_graph_is_not_a_leg(tmp_path: Path) -> None:
    from rag.errors import InputError

    engine = Engine.open(settings_for(tmp_path / "data", enabled=False), create=True)
    try:
        assert engine.available_legs() == ["sparse"]
        with pytest.raises(InputError, match="graph leg is not configured"):
            engine.leg("graph")
    finally:
        engine.close()
    assert not (tmp_path / "data" / "graph").exists()


def test_parallel_extraction_builds_the_same_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_notes(tmp_path / "notes")
    settings = settings_for(tmp_path / "data")
    engine = Engine.open(settings, create=True)
    try:
        sync_paths([root], settings, engine.store)
        monkeypatch.setattr(leg_module, "PARALLEL_MIN_CHUNKS", 1)
        monkeypatch.setattr(leg_module, "PARALLEL_BATCH", 2)
        leg = graph_of(engine)
        leg.workers = 2  # one extraction process beside this one
        seen: list[int] = []
        leg.sync(engine.store, progress=lambda done, total, label: seen.append(done))
        assert seen == sorted(seen) and seen[-1] == engine.store.count_chunks() and len(seen) > 1
        assert leg.graph.snapshot() == from_scratch(engine, tmp_path / "fresh")
    finally:
        engine.close()
