"""Folder sync end to end through the real pipeline (real files, real SQLite store)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from ingest.pipeline import sync_paths
from rag.errors import InputError
from rag.settings import Settings
from rag.store import ChunkStore
from tests.factories_pdf import make_pdf, para


def _sync(settings: Settings, *paths: Path) -> dict:
    with ChunkStore(settings.data_dir) as store:
        return sync_paths(list(paths), settings, store).as_dict()


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_add_unchanged_change_delete(settings: Settings, notes_dir: Path) -> None:
    r = _sync(settings, notes_dir)
    assert (r["added"], r["updated"], r["unchanged"], r["deleted"], r["failed"]) == (2, 0, 0, 0, [])
    assert r["documents"] == 2 and r["chunks"] >= 2

    r = _sync(settings, notes_dir)
    assert (r["added"], r["updated"], r["unchanged"], r["deleted"]) == (0, 0, 2, 0)

    # same bytes, new mtime: unchanged (content hash decides), no re-processing
    _bump_mtime(notes_dir / "todo.txt")
    r = _sync(settings, notes_dir)
    assert (r["updated"], r["unchanged"]) == (0, 2)

    (notes_dir / "todo.txt").write_text("Completely new text about qdrant-edge.\n", encoding="utf-8")
    _bump_mtime(notes_dir / "todo.txt")
    (notes_dir / "new.md").write_text("# 新笔记\n\n内容。\n", encoding="utf-8")
    (notes_dir / "docker" / "gpu.md").unlink()
    r = _sync(settings, notes_dir)
    assert (r["added"], r["updated"], r["unchanged"], r["deleted"]) == (1, 1, 0, 1)
    with ChunkStore(settings.data_dir) as store:
        assert sorted(d.source for d in store.documents()) == ["new.md", "todo.txt"]
        texts = " ".join(c.text for batch in store.iter_chunks() for c in batch)
    assert "qdrant-edge" in texts and "Remember" not in texts and "11434" not in texts


def test_chunks_carry_offsets_pages_and_headings(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "n"
    root.mkdir()
    (root / "a.md").write_text(
        "# Docker 封装\n\n## 9. 将容器保存为镜像\n\n用 `docker commit` 保存容器。然后 `docker save` 导出。\n",
        encoding="utf-8",
    )
    pdf = make_pdf([[para("第一页：Ollama 在 GPU 上运行。")], [para("第二页：端口 11434 用于 HTTP API。")]])
    (root / "b.pdf").write_bytes(pdf)
    r = _sync(settings, root)
    assert r["failed"] == [] and r["added"] == 2
    with ChunkStore(settings.data_dir) as store:
        for doc in store.documents():
            text = store.document_text(doc.doc_id)
            assert text is not None
            for c in store.chunks_of(doc.doc_id):
                assert text[c.start : c.end] == c.text
                assert c.source == doc.source
            if doc.format == "pdf":
                pages = {c.page for c in store.chunks_of(doc.doc_id)}
                assert pages == {1, 2}
                by_page = {c.page: c.text for c in store.chunks_of(doc.doc_id)}
                assert "第二页" in by_page[2] and "第二页" not in by_page[1]
            else:
                last = store.chunks_of(doc.doc_id)[-1]
                assert last.heading_path == ("Docker 封装", "9. 将容器保存为镜像")
                assert last.page is None


def test_bad_files_are_reported_and_do_not_stop_the_run(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "n"
    root.mkdir()
    (root / "good.md").write_text("# ok\n\n正常的笔记。\n", encoding="utf-8")
    (root / "binary.md").write_bytes(bytes(range(256)) * 40)
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    (root / "empty.md").write_bytes(b"")
    (root / "big.txt").write_bytes(b"x" * (2 * 1024 * 1024))
    settings.ingest.max_file_mb = 1
    r = _sync(settings, root)
    failed = {f["path"]: f["error"] for f in r["failed"]}
    assert set(failed) == {"binary.md", "corrupt.pdf", "big.txt"}
    assert "binary" in failed["binary.md"]
    assert "MiB" in failed["big.txt"] and "RAG_INGEST__MAX_FILE_MB" in failed["big.txt"]
    assert all("\n" not in e for e in failed.values())
    assert r["added"] == 2  # good.md and the empty file (no chunks)
    with ChunkStore(settings.data_dir) as store:
        empty = next(d for d in store.documents() if d.source == "empty.md")
        assert empty.n_chunks == 0


def test_file_that_turns_bad_loses_its_stale_chunks(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "n"
    root.mkdir()
    note = root / "a.md"
    note.write_text("# 标题\n\n旧内容 alpha。\n", encoding="utf-8")
    assert _sync(settings, root)["added"] == 1
    note.write_bytes(b"\x00\x01\x02" * 1000)
    _bump_mtime(note)
    r = _sync(settings, root)
    assert [f["path"] for f in r["failed"]] == ["a.md"]
    assert r["documents"] == 0 and r["chunks"] == 0


def test_encodings_are_repaired_and_reported(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "n"
    root.mkdir()
    sentence = "用 docker 在 GPU 上启动 ollama，模型放在命名卷里，删除容器也不会丢失。"
    (root / "gbk.md").write_bytes(("# 笔记\n\n" + sentence * 3).encode("gbk"))
    mojibake = sentence.encode("utf-8").decode("cp1252", errors="ignore")
    (root / "moji.md").write_text(mojibake * 3, encoding="utf-8")
    r = _sync(settings, root)
    assert r["failed"] == []
    notes = {n["path"]: n["note"] for n in r["notes"]}
    assert "moji.md" in notes and "mojibake" in notes["moji.md"]
    with ChunkStore(settings.data_dir) as store:
        docs = {d.source: d for d in store.documents()}
        assert docs["gbk.md"].encoding in {"gb18030", "gbk"}
        assert sentence in (store.document_text(docs["gbk.md"].doc_id) or "")
        repaired = store.document_text(docs["moji.md"].doc_id) or ""
    hits = sum(a == b for a, b in zip(repaired, sentence * 3, strict=False))
    assert hits / len(sentence * 3) > 0.9


def test_no_secret_reaches_the_store(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "n"
    root.mkdir()
    secrets = ["sk-proj-Zq81LmN4pX0vT7rW2yB5cK9dF3gH6jA1", "Tr0ub4dor&3-prod", "AKIAIOSFODNN7EXAMPL3"]
    (root / "env.md").write_text(
        "# 服务器\n\n"
        f'OPENAI_API_KEY={secrets[0]}\n\npassword = "{secrets[1]}"\n\naws_access_key_id = {secrets[2]}\n',
        encoding="utf-8",
    )
    pdf = make_pdf([[para(f"API key: {secrets[0]}")]])
    (root / "keys.pdf").write_bytes(pdf)
    r = _sync(settings, root)
    assert r["failed"] == [] and sum(r["redactions"].values()) >= 4
    raw = b""
    for f in settings.data_dir.iterdir():
        if f.is_file():
            raw += f.read_bytes()
    for s in secrets:
        assert s.encode() not in raw
    with ChunkStore(settings.data_dir) as store:
        text = " ".join(c.text for batch in store.iter_chunks() for c in batch)
    assert "OPENAI_API_KEY=" in text and "[REDACTED:" in text


def test_redaction_can_be_turned_off(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "n"
    root.mkdir()
    (root / "a.md").write_text('password = "Tr0ub4dor&3-prod"\n', encoding="utf-8")
    settings.ingest.redact_secrets = False
    r = _sync(settings, root)
    assert r["redactions"] == {}
    with ChunkStore(settings.data_dir) as store:
        assert "Tr0ub4dor&3-prod" in store.chunks_of(store.documents()[0].doc_id)[0].text


def test_changed_settings_reprocess_unchanged_files(settings: Settings, notes_dir: Path) -> None:
    _sync(settings, notes_dir)
    settings.chunking.size = 64
    settings.chunking.overlap = 8
    r = _sync(settings, notes_dir)
    assert (r["updated"], r["unchanged"]) == (2, 0)


def test_single_file_and_missing_path(settings: Settings, notes_dir: Path) -> None:
    r = _sync(settings, notes_dir / "todo.txt")
    assert r["added"] == 1
    with pytest.raises(InputError, match="path not found"):
        _sync(settings, notes_dir / "nope")


def test_store_has_no_orphans(settings: Settings, notes_dir: Path) -> None:
    _sync(settings, notes_dir)
    (notes_dir / "todo.txt").unlink()
    _sync(settings, notes_dir)
    db = sqlite3.connect(settings.data_dir / "chunks.sqlite3")
    orphans = db.execute("SELECT COUNT(*) FROM chunks WHERE doc_id NOT IN (SELECT doc_id FROM documents)")
    assert orphans.fetchone()[0] == 0
