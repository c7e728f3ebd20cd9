"""Documents carry the redactor and repair versions that produced their text; an ingest re-processes
older ones, and what the old redactor missed leaves every store, down to the bytes on disk.

The "old redactor" is the pipeline with redaction that finds nothing, recorded under an older
version number; the new one is the real redactor under a newer number.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ingest.encoding
import ingest.pipeline
import ingest.secrets
from cli.main import cli
from ingest.audit import audit_data_dir
from ingest.pipeline import IngestReport, sync_paths
from rag.engine import Engine
from rag.settings import Settings
from rag.store import ChunkStore
from tests.factories_pdf import make_pdf, para
from tests.hashing_embedder import HashingEmbedder

PASSWORD = "Tr0ub4dor&3-prod"
OPENAI = "sk-proj-4fQ2mZx9LkP7wR3tYh8VbN1cJd6EsA0u"
# what the BMX tokenizer and the graph may make of the secrets, lowercased
NEEDLES = [b"tr0ub4dor", b"4fq2mzx9lkp7wr3tyh8vbn1cjd6esa0u"]
NOTE = "\n".join(
    [
        "# GPU 服务器",
        "",
        "## 登录",
        "",
        "机器 gpu-01，两张 A100。SSH 登录：ssh deploy@10.0.3.21",
        f'数据库密码：password = "{PASSWORD}"',
        f"OPENAI_API_KEY={OPENAI}",
        "",
        "## Ollama",
        "",
        "用 docker 在 GPU 上启动 ollama：docker run -d --gpus all -p 11434:11434 ollama/ollama。"
        "默认端口 11434，模型放在 /root/.ollama。换模型用 ollama pull qwen2.5:7b，再 ollama run。",
        "",
        "## Qdrant",
        "",
        "Qdrant 在 6333 端口，collection 叫 notes。快照放在 /data/qdrant/snapshots，每天凌晨备份一次。"
        "重建索引前先停掉写入，再用 rag ingest 重新导入整个笔记目录。",
        "",
        "## 监控",
        "",
        "nvidia-smi 看显存；ollama ps 看模型是否在 GPU 上运行。日志在 journalctl -u ollama 里。",
        "",
    ]
)


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, remembering every passage it was asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded.extend(texts)
        return super().embed_passages(texts)


def _settings(data_dir: Path) -> Settings:
    s = Settings(data_dir=data_dir)
    s.chunking.size = 48  # several chunks per section: some before the secret's section, some after
    s.chunking.overlap = 8
    s.embedding.model = "hashing-64"  # the dense leg on, with the test embedder passed to the engine
    return s


def _ingest(settings: Settings, notes: Path, embedder: HashingEmbedder) -> IngestReport:
    """`rag ingest` with every leg (BMX, dense in the edge store, graph); closes everything."""
    with Engine.open(settings, create=True, embedder=embedder) as engine:
        report = sync_paths([notes], settings, engine.store)
        engine.store.acquire_writer_lock()
        try:
            engine.sync()
        finally:
            engine.store.release_writer_lock()
    return report


def _leaking_files(data_dir: Path) -> list[str]:
    """Files whose raw bytes hold any form of the secrets (case-insensitive)."""
    out = []
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            data = path.read_bytes().lower()
            if any(n in data for n in NEEDLES):
                out.append(path.relative_to(data_dir).as_posix())
    return out


def _old_redactor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest.secrets, "REDACTOR_VERSION", 7, raising=False)
    monkeypatch.setattr(ingest.pipeline, "redact", lambda text: (text, {}))


def _new_redactor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest.secrets, "REDACTOR_VERSION", 8, raising=False)
    monkeypatch.setattr(ingest.pipeline, "redact", ingest.secrets.redact)


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    root.mkdir()
    (root / "server.md").write_text(NOTE, encoding="utf-8")
    (root / "other.md").write_text("# 其他\n\ngit log --oneline 看提交历史。\n", encoding="utf-8")
    return root


def test_old_redactor_version_is_reprocessed_and_its_leak_leaves_every_store(
    tmp_path: Path, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    settings = _settings(data_dir)
    embedder = CountingEmbedder()

    _old_redactor(monkeypatch)
    first = _ingest(settings, notes, embedder)
    assert (first.added, first.reprocessed) == (2, 0)
    leaking = _leaking_files(data_dir)
    assert "chunks.sqlite3" in leaking and any(f.startswith("sparse/bmx/") for f in leaking), leaking
    assert audit_data_dir(data_dir).findings  # the audit sees the stale index
    with ChunkStore(data_dir) as store:
        doc = next(d for d in store.documents() if d.source == "server.md")
        assert doc.redactor_version == 7
        old = {c.chunk_id: c.index_text() for c in store.chunks_of(doc.doc_id)}

    _new_redactor(monkeypatch)
    embedder.embedded.clear()
    second = _ingest(settings, notes, embedder)
    assert (second.updated, second.reprocessed, second.unchanged) == (2, 2, 0)  # both came from v7

    assert _leaking_files(data_dir) == []  # no store, journal or index file holds them any more
    assert audit_data_dir(data_dir).findings == []
    with ChunkStore(data_dir) as store:
        doc = next(d for d in store.documents() if d.source == "server.md")
        assert doc.redactor_version == 8
        assert "[REDACTED:" in (store.document_text(doc.doc_id) or "")
        new = {c.chunk_id: c.index_text() for c in store.chunks_of(doc.doc_id)}

    # only chunk texts the redaction changed went to the model; the rest came from the cache,
    # including chunks whose offsets (so ids) moved because a placeholder is longer than the secret
    changed = {t for t in new.values() if t not in set(old.values())}
    moved = [cid for cid, t in new.items() if cid not in old and t in set(old.values())]
    assert changed and moved
    assert set(embedder.embedded) == changed
    assert len(embedder.embedded) == len(changed)

    embedder.embedded.clear()
    third = _ingest(settings, notes, embedder)
    assert (third.unchanged, third.updated, third.reprocessed) == (2, 0, 0)
    assert embedder.embedded == []


def test_reprocessing_clears_the_journals_while_the_stores_stay_open(
    tmp_path: Path, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server keeps its stores open, so SQLite never deletes their write-ahead logs on close:
    re-processing must empty them itself (chunk store and graph)."""
    settings = _settings(tmp_path / "data")
    _old_redactor(monkeypatch)
    with Engine.open(settings, create=True, embedder=CountingEmbedder()) as engine:

        def ingest() -> IngestReport:
            report = sync_paths([notes], settings, engine.store)
            engine.store.acquire_writer_lock()
            try:
                engine.sync()
            finally:
                engine.store.release_writer_lock()
            return report

        ingest()
        assert "graph/graph.sqlite3-wal" in _leaking_files(settings.data_dir)
        _new_redactor(monkeypatch)
        assert ingest().reprocessed == 2
        assert _leaking_files(settings.data_dir) == []


def test_current_versions_are_not_reprocessed(
    tmp_path: Path, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path / "data")
    _new_redactor(monkeypatch)
    with ChunkStore(settings.data_dir) as store:
        assert sync_paths([notes], settings, store).added == 2
        again = sync_paths([notes], settings, store)
    assert (again.unchanged, again.updated, again.reprocessed) == (2, 0, 0)


def test_repair_version_reprocesses_text_but_not_pdf(
    tmp_path: Path, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (notes / "paper.pdf").write_bytes(make_pdf([[para("GPU memory planning for ollama")]]))
    settings = _settings(tmp_path / "data")
    current = int(getattr(ingest.encoding, "REPAIR_VERSION", 1))
    with ChunkStore(settings.data_dir) as store:
        assert sync_paths([notes], settings, store).added == 3
        monkeypatch.setattr(ingest.encoding, "REPAIR_VERSION", current + 1, raising=False)
        report = sync_paths([notes], settings, store)
        assert (report.updated, report.reprocessed, report.unchanged) == (2, 2, 1)
        versions = {d.source: d.repair_version for d in store.documents()}
    assert versions == {"server.md": current + 1, "other.md": current + 1, "paper.pdf": 0}


def test_redactor_version_is_ignored_without_redaction(
    tmp_path: Path, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path / "data")
    settings.ingest.redact_secrets = False
    _old_redactor(monkeypatch)
    with ChunkStore(settings.data_dir) as store:
        sync_paths([notes], settings, store)
        _new_redactor(monkeypatch)
        report = sync_paths([notes], settings, store)
        assert {d.redactor_version for d in store.documents()} == {0}
    assert (report.unchanged, report.updated) == (2, 0)


def test_v1_data_dir_is_migrated_and_reprocessed(
    tmp_path: Path, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data dir from before versions were stored: the columns are added with version 0, so the
    next ingest re-processes every document; `rag documents --json` shows the versions."""
    data_dir = tmp_path / "data"
    settings = _settings(data_dir)
    _new_redactor(monkeypatch)
    with ChunkStore(data_dir) as store:
        sync_paths([notes], settings, store)
    db = sqlite3.connect(data_dir / "chunks.sqlite3")
    db.execute("ALTER TABLE documents DROP COLUMN redactor_version")
    db.execute("ALTER TABLE documents DROP COLUMN repair_version")
    db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    db.commit()
    db.close()

    with ChunkStore(data_dir) as store:
        assert {(d.redactor_version, d.repair_version) for d in store.documents()} == {(0, 0)}
        report = sync_paths([notes], settings, store)
    assert (report.updated, report.reprocessed) == (2, 2)

    result = CliRunner().invoke(cli, ["documents", "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    import json

    rows = json.loads(result.output)["documents"]
    repair = int(getattr(ingest.encoding, "REPAIR_VERSION", 1))
    assert {(r["redactor_version"], r["repair_version"]) for r in rows} == {(8, repair)}
