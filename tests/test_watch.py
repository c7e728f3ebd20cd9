"""`rag serve --watch`: every kind of change to a watched folder reaches search by itself."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ingest.watch import relevant
from rag.settings import load_settings

#: Save -> searchable bound asserted here (measured figures: bench/results/watch.md).
LATENCY_BOUND_S = 15.0


@contextlib.contextmanager
def watched(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    folder = tmp_path / "notes"
    folder.mkdir(exist_ok=True)
    settings = load_settings(data_dir=tmp_path / "data")
    settings.graph.enabled = False
    settings.ingest.workers = 1
    settings.ingest.watch_debounce_ms = 100
    settings.api.publish_interval_s = 0.2
    settings.llm.backend = "none"
    with TestClient(create_app(settings, watch=[folder])) as client:
        wait_for(lambda: client.get("/health").json()["jobs"] == {"queued": 0, "running": 0})
        yield client, folder


def wait_for(check: Any, timeout: float = LATENCY_BOUND_S) -> float:
    """Seconds until ``check()`` holds; fails after ``timeout``."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - t0


def sources(client: TestClient, query: str) -> set[str]:
    hits = client.post("/v1/search", json={"query": query, "k": 50, "mode": "sparse"}).json()["hits"]
    return {h["source"] for h in hits}


def listing(client: TestClient) -> dict[str, dict[str, Any]]:
    return {d["source"]: d for d in client.get("/v1/documents").json()["documents"]}


def test_new_changed_and_deleted_files(tmp_path: Path) -> None:
    with watched(tmp_path) as (client, folder):
        (folder / "a.md").write_text("# A\n\nzebra giraffe\n", encoding="utf-8")
        wait_for(lambda: sources(client, "zebra") == {"a.md"})
        (folder / "a.md").write_text("# A\n\nokapi tapir\n", encoding="utf-8")
        wait_for(lambda: sources(client, "okapi") == {"a.md"})
        assert sources(client, "zebra") == set()
        (folder / "a.md").unlink()
        wait_for(lambda: not listing(client))
        assert sources(client, "okapi") == set()


def test_renamed_and_moved_files(tmp_path: Path) -> None:
    with watched(tmp_path) as (client, folder):
        (folder / "a.md").write_text("# A\n\nnarwhal beluga\n", encoding="utf-8")
        wait_for(lambda: sources(client, "narwhal") == {"a.md"})
        (folder / "a.md").rename(folder / "b.md")
        wait_for(lambda: sources(client, "narwhal") == {"b.md"})
        (folder / "deep" / "er").mkdir(parents=True)
        (folder / "b.md").rename(folder / "deep" / "er" / "b.md")
        wait_for(lambda: sources(client, "narwhal") == {"deep/er/b.md"})
        assert set(listing(client)) == {"deep/er/b.md"}


def test_an_editors_atomic_save(tmp_path: Path) -> None:
    with watched(tmp_path) as (client, folder):
        target = folder / "note.md"
        target.write_text("# Note\n\nversion one walrus\n", encoding="utf-8")
        wait_for(lambda: sources(client, "walrus") == {"note.md"})
        for tmp_name in (".note.md.swp", "note.md.tmp"):  # vim-like and generic temp files
            tmp = folder / tmp_name
            tmp.write_text("# Note\n\nversion two manatee\n", encoding="utf-8")
            os.replace(tmp, target)
            wait_for(lambda: sources(client, "manatee") == {"note.md"})
            target.write_text("# Note\n\nversion one walrus\n", encoding="utf-8")
            wait_for(lambda: sources(client, "walrus") == {"note.md"})
        assert set(listing(client)) == {"note.md"}


def test_a_folder_deleted_whole(tmp_path: Path) -> None:
    with watched(tmp_path) as (client, folder):
        (folder / "keep.md").write_text("kept axolotl\n", encoding="utf-8")
        sub = folder / "trip" / "day1"
        sub.mkdir(parents=True)
        for i in range(5):
            (sub / f"n{i}.md").write_text(f"# day {i}\n\naxolotl {i}\n", encoding="utf-8")
        wait_for(lambda: len(listing(client)) == 6)
        shutil.rmtree(folder / "trip")
        wait_for(lambda: set(listing(client)) == {"keep.md"})
        assert sources(client, "axolotl") == {"keep.md"}


def word(i: int) -> str:
    """A word only note ``i`` of the burst has (letters: the tokenizer splits digits off)."""
    return "zq" + "".join(chr(ord("a") + int(d)) for d in f"{i:04d}")


def test_a_burst_of_1000_files(tmp_path: Path) -> None:
    with watched(tmp_path) as (client, folder):
        t0 = time.monotonic()
        for i in range(1000):
            (folder / f"burst-{i:04d}.md").write_text(
                f"# note {i}\n\nburstword {word(i)}\n", encoding="utf-8"
            )
        seen_pending = False

        def all_indexed() -> bool:
            nonlocal seen_pending
            states = [r["status"] for r in listing(client).values()]
            seen_pending |= "pending" in states
            return len(states) == 1000 and set(states) == {"indexed"}

        wait_for(all_indexed, timeout=120)
        took = time.monotonic() - t0
        assert sources(client, word(999)) == {"burst-0999.md"}
        assert sources(client, word(0)) == {"burst-0000.md"}
        assert took < 120
        assert seen_pending  # files seen but not yet ingested were listed as pending meanwhile


def test_status_shows_failed_files_with_the_reason(tmp_path: Path) -> None:
    with watched(tmp_path) as (client, folder):
        (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
        (folder / "fine.md").write_text("ok\n", encoding="utf-8")

        def settled() -> bool:
            rows = listing(client)
            return {s: r["status"] for s, r in rows.items()} == {"broken.pdf": "failed", "fine.md": "indexed"}

        wait_for(settled)
        rows = listing(client)
        assert rows["broken.pdf"]["status"] == "failed" and rows["broken.pdf"]["doc_id"] is None
        assert "PDF" in rows["broken.pdf"]["error"]
        assert rows["fine.md"]["status"] == "indexed" and rows["fine.md"]["error"] is None
        (folder / "broken.pdf").unlink()
        wait_for(lambda: "broken.pdf" not in listing(client))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/n/a.md", True),
        ("/n/sub", True),
        ("/n/a.pdf", True),
        ("/n/.a.md.swp", False),
        ("/n/a.md.tmp", False),
        ("/n/a.md~", False),
        ("/n/.git/HEAD", False),
        ("/n/4913", False),
        ("/n/image.png", False),
    ],
)
def test_which_changes_wake_the_watcher(path: str, expected: bool) -> None:
    assert relevant(path) is expected
    assert relevant(path.replace("/n/", "/home/u/.notes/n/"), [Path("/home/u/.notes/n")]) is expected


def test_removed_text_leaves_the_write_ahead_log_while_serving(tmp_path: Path) -> None:
    """A server's pinned snapshot would keep the chunk store's WAL from being truncated; the
    truncation is done at publish time instead, with the snapshot released for it."""
    with watched(tmp_path) as (client, folder):
        (folder / "secret.md").write_text("# Keys\n\npassword hunter2 zanzibar\n", encoding="utf-8")
        wait_for(lambda: sources(client, "zanzibar") == {"secret.md"})
        (folder / "secret.md").unlink()
        wait_for(lambda: sources(client, "zanzibar") == set())
        wait_for(lambda: client.get("/health").json()["jobs"] == {"queued": 0, "running": 0})
        wal = tmp_path / "data" / "chunks.sqlite3-wal"
        assert not wal.exists() or wal.stat().st_size == 0
        assert b"zanzibar" not in (tmp_path / "data" / "chunks.sqlite3").read_bytes()
