"""The API's building blocks without HTTP: safe names, the readers-writer lock, pinned snapshots,
publishing, error mapping, the bind rule and `rag serve`'s refusal."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from api.auth import check_bind, is_loopback
from api.errors import error_type, status_for
from api.serving import RWLock, ServingEngine, SnapshotStore
from api.uploads import safe_filename
from cli.main import cli
from ingest.pipeline import sync_paths
from rag.errors import (
    BackendError,
    ConfigError,
    ConflictError,
    EncryptedPdfError,
    FileTooLargeError,
    InputError,
    LLMStreamError,
    LLMTimeoutError,
    LLMUnavailableError,
    ModelNotFoundError,
    NotFoundError,
    RagError,
    StoreError,
    StoreLockedError,
    UnsupportedFileError,
)
from rag.settings import ApiSettings, Settings
from rag.store import ChunkStore
from tests.answer_corpus import write_notes

# -- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("notes.md", "notes.md"),
        ("../../etc/passwd.md", "passwd.md"),
        ("..\\..\\boot.ini.txt", "boot.ini.txt"),
        ("/abs/path/x.pdf", "x.pdf"),
        ("C:\\Users\\me\\a.MD", "a.MD"),
        (".bashrc.md", "bashrc.md"),
        ("a\x00b\x1f\u202e.md", "ab.md"),  # NUL, a control char, a bidi override
        ("  spaced   name .md", "spaced name .md"),
        ('what?<is>:"this"|*.md', "what__is___this___.md"),
        ("周报 2024.markdown", "周报 2024.markdown"),
    ],
)
def test_safe_filename(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


@pytest.mark.parametrize("name", ["", "..", ".", "...", "../..", "dir/", ".md", "noext"])
def test_safe_filename_rejects_names_without_a_file(name: str) -> None:
    with pytest.raises(InputError):
        safe_filename(name)


def test_safe_filename_rejects_unsupported_types_and_bounds_length() -> None:
    with pytest.raises(UnsupportedFileError):
        safe_filename("setup.exe")
    long = safe_filename("长" * 300 + ".md")
    assert long.endswith(".md") and len(long.encode()) <= 200


# -- the lock --------------------------------------------------------------------------------------


def test_readers_share_and_a_writer_waits_for_them() -> None:
    lock = RWLock()
    events: list[str] = []
    inside = threading.Barrier(3)

    def reader(name: str) -> None:
        with lock.read():
            inside.wait(5)  # both readers are inside at once
            time.sleep(0.05)
            events.append(f"{name} out")

    readers = [threading.Thread(target=reader, args=(n,)) for n in ("r1", "r2")]
    for t in readers:
        t.start()
    inside.wait(5)
    with lock.write():
        events.append("writer in")
    for t in readers:
        t.join()
    assert events[-1] == "writer in" and sorted(events[:2]) == ["r1 out", "r2 out"]


def test_a_waiting_writer_goes_before_new_readers() -> None:
    lock = RWLock()
    order: list[str] = []
    first_in = threading.Event()
    release = threading.Event()

    def long_reader() -> None:
        with lock.read():
            first_in.set()
            release.wait(5)
        order.append("reader 1 out")

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def late_reader() -> None:
        with lock.read():
            order.append("reader 2")

    t1 = threading.Thread(target=long_reader)
    t1.start()
    first_in.wait(5)
    tw = threading.Thread(target=writer)
    tw.start()
    while not lock._writers_waiting:  # the writer is queued
        time.sleep(0.001)
    t2 = threading.Thread(target=late_reader)
    t2.start()
    time.sleep(0.05)
    assert order == []  # the late reader waits behind the writer
    release.set()
    for t in (t1, tw, t2):
        t.join(5)
    assert order == ["reader 1 out", "writer", "reader 2"]


def test_reentrant_reads_and_reading_while_writing() -> None:
    lock = RWLock()
    with lock.read(), lock.read():
        pass
    with lock.write(), lock.read():  # the writer thread may read
        pass
    done = threading.Event()

    def other() -> None:
        with lock.write():
            done.set()

    t = threading.Thread(target=other)
    t.start()
    t.join(5)
    assert done.is_set()  # nothing leaked


# -- snapshots and publishing ----------------------------------------------------------------------


@pytest.fixture
def indexed(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", embedding={"model": "none"}, graph={"enabled": False})  # type: ignore[arg-type]
    settings.ingest.workers = 1
    write_notes(
        tmp_path / "notes", {f"n{i}.md": f"# Note {i}\n\nzebra stripes version one n{i}\n" for i in range(6)}
    )
    with ChunkStore(settings.data_dir) as store:
        sync_paths([tmp_path / "notes"], settings, store)
    return settings


def test_a_snapshot_does_not_see_later_commits(indexed: Settings, tmp_path: Path) -> None:
    snap = SnapshotStore(indexed.data_dir)
    try:
        before = (snap.generation(), snap.count_documents(), snap.chunk_ids())
        (tmp_path / "notes" / "n0.md").write_text("# Note 0\n\nzebra stripes version two\n")
        (tmp_path / "notes" / "n1.md").unlink()
        with ChunkStore(indexed.data_dir) as writer:
            sync_paths([tmp_path / "notes"], indexed, writer)
            assert writer.generation() > before[0] and writer.count_documents() == 5
        assert (snap.generation(), snap.count_documents(), snap.chunk_ids()) == before
        with pytest.raises(StoreError), snap.transaction():
            pass
    finally:
        snap.close()
    fresh = SnapshotStore(indexed.data_dir)
    assert fresh.count_documents() == 5
    fresh.close()


def test_publish_swaps_a_consistent_state(indexed: Settings, tmp_path: Path) -> None:
    engine = ServingEngine.open_serving(indexed)
    try:
        assert engine.behind()  # the legs were never synced
        first = engine.publish()
        assert first is not None and not engine.behind()
        assert engine.publish() is None  # nothing changed
        hits = engine.search("zebra stripes", 10, "sparse")
        assert len(hits) == 6 and all("version one" in h.chunk.text for h in hits)

        for i in range(3):
            (tmp_path / "notes" / f"n{i}.md").write_text(f"# Note {i}\n\nzebra stripes version two n{i}\n")
        with ChunkStore(indexed.data_dir) as writer:
            sync_paths([tmp_path / "notes"], indexed, writer)
        # committed but not published: searches still see the whole old state, no document missing
        hits = engine.search("zebra stripes", 10, "sparse")
        assert len(hits) == 6 and all("version one" in h.chunk.text for h in hits)
        published = engine.publish()
        assert published is not None and published.generation > first.generation
        texts = sorted(
            h.chunk.text.split("version ")[1].strip() for h in engine.search("zebra stripes", 10, "sparse")
        )
        assert texts == ["one n3", "one n4", "one n5", "two n0", "two n1", "two n2"]
        assert engine.status()["legs"]["sparse"]["in_sync"] is True
    finally:
        engine.close()


# -- errors and binding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (NotFoundError("x"), 404, "not_found"),
        (ConflictError("x"), 409, "conflict"),
        (FileTooLargeError("x"), 413, "file_too_large"),
        (InputError("x"), 422, "input"),
        (UnsupportedFileError("x"), 422, "unsupported_file"),
        (EncryptedPdfError("x"), 422, "encrypted_pdf"),
        (LLMStreamError("x"), 502, "llm_stream"),
        (LLMTimeoutError("x"), 504, "llm_timeout"),
        (StoreLockedError("x"), 503, "store_locked"),
        (StoreError("x"), 503, "store"),
        (LLMUnavailableError("x"), 503, "llm_unavailable"),
        (ModelNotFoundError("x"), 503, "model_not_found"),
        (BackendError("x"), 503, "backend"),
        (ConfigError("x"), 503, "config"),
        (RagError("x"), 500, "rag"),
    ],
)
def test_error_mapping(exc: RagError, status: int, kind: str) -> None:
    assert (status_for(exc), error_type(exc)) == (status, kind)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        *[("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True)],
        *[("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("example.com", False)],
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_check_bind() -> None:
    def api(**kw: object) -> ApiSettings:
        return ApiSettings.model_validate(kw)

    check_bind(api(host="127.0.0.1"))
    check_bind(api(host="0.0.0.0", api_key="k"))
    check_bind(api(host="0.0.0.0", read_key="r"))
    check_bind(api(host="0.0.0.0", allow_insecure=True))
    with pytest.raises(ConfigError, match="without an API key"):
        check_bind(api(host="0.0.0.0"))


def test_rag_serve_refuses_a_public_address_without_a_key(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve on 0.0.0.0 without an API key")
    assert "RAG_API__API_KEY" in lines[0]
    assert not (tmp_path / "d").exists()  # refused before touching the data dir
