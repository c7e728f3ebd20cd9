from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from rag.errors import StoreError, StoreLockedError
from rag.models import Chunk
from rag.store import ChunkStore, DocumentRecord


def _doc(doc_id: str, path: str, n: int) -> tuple[DocumentRecord, list[Chunk]]:
    rec = DocumentRecord(
        doc_id=doc_id,
        path=path,
        root="/r",
        source=path.removeprefix("/r/"),
        format="markdown",
        size=1,
        mtime_ns=1,
        content_hash="h",
        pipeline="p",
        n_pages=None,
        n_chunks=n,
    )
    chunks = [
        Chunk(f"{doc_id}-{i}", doc_id, rec.source, i, f"text {i}", i * 10, i * 10 + 6, None, ("A", "B"))
        for i in range(n)
    ]
    return rec, chunks


def test_put_replace_delete_and_generation(tmp_path: Path) -> None:
    with ChunkStore(tmp_path) as store:
        g0 = store.generation()
        rec, chunks = _doc("d1", "/r/a.md", 3)
        with store.transaction() as tx:
            tx.put_document(rec, "full text", chunks)
        assert store.generation() == g0 + 1
        assert store.count_chunks() == 3
        got = store.get_chunks(["d1-2", "missing", "d1-0"])
        assert [c.chunk_id for c in got] == ["d1-2", "d1-0"]
        assert got[0].heading_path == ("A", "B") and got[0].source == "a.md"
        rec2, chunks2 = _doc("d1", "/r/a.md", 1)
        with store.transaction() as tx:
            tx.put_document(rec2, "short", chunks2)
        assert store.chunk_ids() == {"d1-0"}
        assert store.document_text("d1") == "short"
        with store.transaction() as tx:
            assert tx.delete_document("d1")
        assert store.count_documents() == 0 and store.count_chunks() == 0
        assert store.generation() == g0 + 3


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    with ChunkStore(tmp_path) as store:
        rec, chunks = _doc("d1", "/r/a.md", 2)
        with pytest.raises(RuntimeError), store.transaction() as tx:
            tx.put_document(rec, "t", chunks)
            raise RuntimeError("boom")
        assert store.count_documents() == 0 and store.count_chunks() == 0
        assert store.generation() == 0


def test_documents_under_prefix_is_not_fooled_by_similar_names(tmp_path: Path) -> None:
    with ChunkStore(tmp_path) as store, store.transaction() as tx:
        for i, p in enumerate(["/r/notes/a.md", "/r/notes2/b.md"]):
            rec, chunks = _doc(f"d{i}", p, 1)
            tx.put_document(rec, "t", chunks)
    with ChunkStore(tmp_path) as store:
        assert [d.path for d in store.documents(under="/r/notes")] == ["/r/notes/a.md"]


def _try_lock(path: str, q: multiprocessing.Queue) -> None:
    try:
        with ChunkStore(Path(path)) as s:
            s.acquire_writer_lock()
        q.put("locked")
    except StoreLockedError:
        q.put("busy")


def test_writer_lock_is_exclusive_across_processes(tmp_path: Path) -> None:
    with ChunkStore(tmp_path) as store:
        store.acquire_writer_lock()
        q: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        p = multiprocessing.get_context("spawn").Process(target=_try_lock, args=(str(tmp_path), q))
        p.start()
        p.join(60)
        assert q.get(timeout=5) == "busy"
        store.release_writer_lock()
    p = multiprocessing.get_context("spawn").Process(target=_try_lock, args=(str(tmp_path), q))
    p.start()
    p.join(60)
    assert q.get(timeout=5) == "locked"


def test_missing_store_and_corrupt_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no index"):
        ChunkStore(tmp_path / "nothing", create=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "chunks.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        ChunkStore(bad)
