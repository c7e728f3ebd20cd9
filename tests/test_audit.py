"""`rag audit`: every kind of store file is read, deleted rows included; a clean index passes.

Each test plants one secret in one kind of file the way that store writes it (a chunk row, a
deleted row left in free pages, an uncheckpointed WAL frame, a BMX term, a graph mention, a
vector payload, a log line) and checks the audit names that file, says what it found and never
prints the secret itself.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from ingest.audit import audit_data_dir, mask
from ingest.pipeline import sync_paths
from rag.engine import Engine
from rag.graph.extract import Mention
from rag.graph.store import GraphStore
from rag.settings import Settings
from rag.sparse.bmx import BMXIndex
from rag.store import ChunkStore, DocumentRecord
from tests.hashing_embedder import HashingEmbedder

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "notes"
PASSWORD = "Tr0ub4dor&3-prod"
OPENAI = "sk-proj-4fQ2mZx9LkP7wR3tYh8VbN1cJd6EsA0u"
LEAK = f'数据库密码：password = "{PASSWORD}"\nOPENAI_API_KEY={OPENAI}\n'


def _ingest(data_dir: Path, notes: Path) -> None:
    """What `rag ingest` does, with every leg: BMX, dense (edge vector store) and the graph."""
    settings = Settings(data_dir=data_dir)
    settings.embedding.model = "hashing-64"  # the dense leg on, with the test embedder passed below
    with Engine.open(settings, create=True, embedder=HashingEmbedder()) as engine:
        sync_paths([notes], settings, engine.store)
        engine.store.acquire_writer_lock()
        try:
            engine.sync()
        finally:
            engine.store.release_writer_lock()


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """samples/notes (which holds a password and an API key the redactor removes), fully ingested."""
    data_dir = tmp_path_factory.mktemp("sample") / "data"
    _ingest(data_dir, SAMPLES)
    return data_dir


def _kinds_by_file(data_dir: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in audit_data_dir(data_dir).findings:
        out.setdefault(f.file, set()).add(f.kind)
    return out


def _assert_masked(data_dir: Path, secret: str) -> None:
    for f in audit_data_dir(data_dir).findings:
        assert secret not in f.excerpt and secret not in f.where
        assert secret[:6] not in f.excerpt


# -- clean -----------------------------------------------------------------------------------------


def test_freshly_ingested_sample_notes_pass(sample_index: Path) -> None:
    kinds = {p.relative_to(sample_index).parts[0] for p in sample_index.rglob("*") if p.is_file()}
    assert {"chunks.sqlite3", "sparse", "dense", "graph"} <= kinds  # every store is there to be read
    report = audit_data_dir(sample_index)
    assert report.findings == []
    assert report.files >= 20


def test_cli_clean_exits_zero(sample_index: Path) -> None:
    result = CliRunner().invoke(cli, ["audit", "--data-dir", str(sample_index), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["findings"] == []


def test_cli_reads_env_data_dir(sample_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(sample_index))
    result = CliRunner().invoke(cli, ["audit"])
    assert result.exit_code == 0, result.output
    assert "nothing secret-looking stored" in result.output


def test_cli_missing_data_dir_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["audit", "--data-dir", str(tmp_path / "nope")])
    assert result.exit_code not in (0, 1)
    assert "no data dir" in result.output


# -- the chunk store -------------------------------------------------------------------------------


def _store_leak(data_dir: Path) -> None:
    """A document as an index built by an older redactor stored it: the secret in its text."""
    with ChunkStore(data_dir) as store, store.transaction() as tx:
        from rag.models import Chunk

        chunk = Chunk(
            chunk_id="c1",
            doc_id="d1",
            source="old.md",
            ordinal=0,
            text=LEAK,
            start=0,
            end=len(LEAK),
            page=None,
        )
        record = DocumentRecord.for_text(
            doc_id="d1",
            root="/notes",
            source="old.md",
            text=LEAK,
            format="markdown",
            pipeline="p",
            n_chunks=1,
        )
        tx.put_document(record, LEAK, [chunk])


def test_chunk_store_row_is_found_and_masked(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _store_leak(data_dir)
    result = CliRunner().invoke(cli, ["audit", "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 1
    assert PASSWORD not in result.output and OPENAI not in result.output
    findings = json.loads(result.output)["findings"]
    assert {f["file"] for f in findings} == {"chunks.sqlite3"}
    assert {"password", "openai_key"} <= {f["kind"] for f in findings}
    assert all(set(f) >= {"file", "kind", "excerpt"} for f in findings)
    excerpts = " ".join(f["excerpt"] for f in findings)
    assert mask(PASSWORD) in excerpts and mask(OPENAI) in excerpts


def test_cli_human_output_names_the_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _store_leak(data_dir)
    result = CliRunner().invoke(cli, ["audit", "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert "chunks.sqlite3" in result.output and PASSWORD not in result.output


def _sqlite_with(path: Path, text: str, *, secure_delete: bool, wal: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA secure_delete={'ON' if secure_delete else 'OFF'}")
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    rows = [f"harmless row {i} " * 3 for i in range(20)]
    db.executemany("INSERT INTO t (body) VALUES (?)", [(r,) for r in [*rows, text, *rows]])
    return db


def test_deleted_row_in_free_space_is_found(tmp_path: Path) -> None:
    """SQLite without secure_delete keeps a deleted row's bytes: invisible to SQL, not to the audit."""
    path = tmp_path / "chunks.sqlite3"
    db = _sqlite_with(path, LEAK, secure_delete=False, wal=False)
    db.execute("DELETE FROM t WHERE body LIKE '%password%'")
    assert db.execute("SELECT COUNT(*) FROM t WHERE body LIKE '%Tr0ub%'").fetchone()[0] == 0
    db.close()
    assert PASSWORD.encode() in path.read_bytes()  # still on disk
    findings = audit_data_dir(tmp_path).findings
    assert any(f.file == "chunks.sqlite3" and f.kind == "password" for f in findings)
    assert all("table" not in f.where for f in findings)  # found in the bytes, not through SQL


def test_secure_delete_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "chunks.sqlite3"
    db = _sqlite_with(path, LEAK, secure_delete=True, wal=False)
    assert PASSWORD.encode() in path.read_bytes()
    db.execute("DELETE FROM t WHERE body LIKE '%password%'")
    db.close()
    assert PASSWORD.encode() not in path.read_bytes()
    assert audit_data_dir(tmp_path).findings == []


def test_uncheckpointed_wal_frame_is_found(tmp_path: Path) -> None:
    db = _sqlite_with(tmp_path / "chunks.sqlite3", LEAK, secure_delete=True, wal=True)
    try:
        wal = tmp_path / "chunks.sqlite3-wal"
        assert PASSWORD.encode() in wal.read_bytes()
        kinds = _kinds_by_file(tmp_path)
        assert "password" in kinds["chunks.sqlite3-wal"]
        _assert_masked(tmp_path, PASSWORD)
    finally:
        db.close()


def test_live_records_are_read_field_by_field(tmp_path: Path) -> None:
    """Neighbouring fields on disk must not read as a label and its value (``"password": 1}GPU``),
    neither in the database file nor in a WAL frame."""
    db = sqlite3.connect(tmp_path / "chunks.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE d (redactions TEXT, text TEXT)")
    db.execute("INSERT INTO d VALUES (?, ?)", ('{"api_key": 1, "password": 1}', "GPU 服务器信息"))
    try:
        assert b'"password": 1}GPU' in (tmp_path / "chunks.sqlite3-wal").read_bytes()  # adjacent on disk
        assert audit_data_dir(tmp_path).findings == []
    finally:
        db.close()
    assert b'"password": 1}GPU' in (tmp_path / "chunks.sqlite3").read_bytes()
    assert audit_data_dir(tmp_path).findings == []


# -- BMX -------------------------------------------------------------------------------------------


def test_bmx_term_is_found(tmp_path: Path) -> None:
    index = BMXIndex()
    index.upsert(["a", "b"], [["ollama", "port", f"password={PASSWORD}"], ["docker", "gpu", OPENAI]])
    index.save(tmp_path / "sparse" / "bmx")
    kinds = _kinds_by_file(tmp_path)
    terms_file = next(f for f in kinds if f.endswith("terms_blob.npy"))
    assert {"password", "openai_key"} <= kinds[terms_file]
    _assert_masked(tmp_path, PASSWORD)


def test_bmx_stale_term_from_an_old_save_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index saved before dead terms were dropped keeps a deleted chunk's tokens; the audit sees them."""
    index = BMXIndex()
    index.upsert(["a", "b"], [["ollama", "port"], ["docker", "tr0ub4dor"]])
    index.delete(["b"])
    monkeypatch.setattr(BMXIndex, "_saved_terms", lambda self: list(self._terms))  # the old save
    index.save(tmp_path / "bmx")
    findings = audit_data_dir(tmp_path).findings
    stale = [f for f in findings if f.kind == "stale_term"]
    assert len(stale) == 2 and {f.excerpt for f in stale} == {mask("docker"), mask("tr0ub4dor")}
    assert all("tr0ub4dor" not in f.excerpt for f in findings)


def test_bmx_save_drops_dead_terms_and_scores_the_same(tmp_path: Path) -> None:
    index = BMXIndex()
    index.upsert(["a", "b", "c"], [["ollama", "port", "x1"], ["docker", "tr0ub4dor"], ["docker", "ollama"]])
    index.delete(["b"])
    index.save(tmp_path / "bmx")
    blob = b"".join(p.read_bytes() for p in (tmp_path / "bmx").rglob("*") if p.is_file())
    assert b"tr0ub4dor" not in blob and b"docker" in blob
    loaded = BMXIndex.load(tmp_path / "bmx")
    for query in (["docker"], ["ollama", "port"], ["tr0ub4dor"]):
        assert loaded.search(query, 5) == index.search(query, 5)
    loaded.upsert(["d"], [["tr0ub4dor", "again"]])  # a dead term can come back
    assert [doc for doc, _ in loaded.search(["tr0ub4dor"], 5)] == ["d"]
    assert audit_data_dir(tmp_path).findings == []


# -- graph, vectors, logs, JSON --------------------------------------------------------------------


def test_graph_mention_is_found(tmp_path: Path) -> None:
    graph = GraphStore(tmp_path / "graph")
    with graph.transaction():
        graph.add(
            [
                (
                    "c1",
                    [
                        Mention(
                            key="ollama", surface=f"OPENAI_API_KEY={OPENAI}", kind="term", tf=1, salience=1.0
                        )
                    ],
                    None,
                )
            ],
            max_salient=8,
        )
    graph.close()
    kinds = _kinds_by_file(tmp_path)
    assert "openai_key" in kinds["graph/graph.sqlite3"]
    _assert_masked(tmp_path, OPENAI)


def test_vector_store_payload_is_found(tmp_path: Path) -> None:
    """A payload carrying chunk text (as other vector-store layouts do) is read from the edge shard."""
    qdrant_edge = pytest.importorskip("qdrant_edge")
    from rag.vectors.edge import EdgeVectorStore

    store = EdgeVectorStore(tmp_path / "dense" / "qdrant-edge", "chunks-test", 4)
    store.upsert(["c1"], np.ones((1, 4), dtype=np.float32))
    point = qdrant_edge.Point(7, [0.5, 0.5, 0.5, 0.5], {"chunk_id": "c2", "text": f'password = "{PASSWORD}"'})
    store._call("update", qdrant_edge.UpdateOperation.upsert_points([point]))
    store.close()
    kinds = _kinds_by_file(tmp_path)
    leaked = [f for f, k in kinds.items() if f.startswith("dense/qdrant-edge/") and "password" in k]
    assert leaked, kinds
    _assert_masked(tmp_path, PASSWORD)


def test_log_file_is_found(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "server.log").write_text(
        "INFO request /v1/search\nDEBUG headers Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX2hlcmU\n"
        f"DEBUG body 登录密码 {PASSWORD}\n",
        encoding="utf-8",
    )
    findings = audit_data_dir(tmp_path).findings
    assert {f.file for f in findings} == {"logs/server.log"}
    assert len(findings) >= 2
    _assert_masked(tmp_path, PASSWORD)


def test_json_escaped_chinese_label_is_found(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"notes": [f"数据库密码：{PASSWORD}"]}), encoding="utf-8")
    assert "\\u5bc6" in (tmp_path / "state.json").read_text()  # the label is escaped on disk
    assert "password" in _kinds_by_file(tmp_path)["state.json"]


def test_a_leak_planted_in_a_real_index_is_found(sample_index: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(sample_index, data_dir)
    (data_dir / "api.log").write_text(f"export HF_TOKEN=hf_{'aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z'}\n")
    report = audit_data_dir(data_dir)
    assert [(f.file, f.kind) for f in report.findings] == [("api.log", "huggingface_token")]


# Credentials in the shapes real notes hold them (see ARCHITECTURE.md, "What real notes look like"),
# beside long hex ids that are not secrets.
MESSY_NOTE = """# 服务器和账号

## 阿里云 OSS

Access Key  LTAI5tQ9xZ2mW8vR3nK7pJ4s
Secret Key  q8Vn3mZx7Lp2Wr9Tk4Yh6Bc1Nd5Fs0GjAe3Ui7Ko

## 账号密码

登录密码 Xk9#mP2vQw
grafana 密码：Gr4f4na!2024

## 跳板机

ssh -p 2222 deploy@10.0.3.21
Zq8#vL2m9Pw
ssh -p 2200 root@10.0.3.22
123456

## 模型

export HF_TOKEN=hf_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z
OPENAI_API_KEY=sk-proj-4fQ2mZx9LkP7wR3tYh8VbN1cJd6EsA0u
docker run -d -e POSTGRES_PASSWORD=pg_S3cret_77 postgres:16

## 容器

docker start 3f9a7c2e1b4d8a6f0e5c9b7a3d1f2e4c6b8a0d9e7f5c3b1a2d4e6f8a0c2b4d6e
git checkout 9fceb02d0ae598e95dc970b74767f19372d61af8
"""


@pytest.mark.parametrize("redact", [True, False])
def test_messy_notes_are_clean_after_redaction_and_found_without(tmp_path: Path, redact: bool) -> None:
    notes = tmp_path / "notes"
    shutil.copytree(SAMPLES, notes)
    (notes / "servers.md").write_text(MESSY_NOTE, encoding="utf-8")
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir)
    settings.ingest.redact_secrets = redact
    with Engine.open(settings, create=True) as engine:
        sync_paths([notes], settings, engine.store)
        engine.store.acquire_writer_lock()
        try:
            engine.sync(["sparse", "graph"])
        finally:
            engine.store.release_writer_lock()
    findings = audit_data_dir(data_dir).findings
    if redact:
        assert findings == []
        return
    assert {"chunks.sqlite3"} <= {f.file for f in findings}
    kinds = {f.kind for f in findings}
    assert {"password", "openai_key", "huggingface_token"} <= kinds
    excerpts = " ".join(f.excerpt for f in findings)
    assert "docker start" not in excerpts and "checkout" not in excerpts  # hex ids are not secrets
    for secret in ("Xk9#mP2vQw", "Zq8#vL2m9Pw", "pg_S3cret_77", "hf_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z"):
        assert secret not in excerpts


def test_mask_keeps_two_characters_and_the_length() -> None:
    assert mask(PASSWORD) == f"Tr…({len(PASSWORD)} chars)"
    assert mask("12345") == "1…(5 chars)"
