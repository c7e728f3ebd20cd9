"""One owner per data dir: the owner record, stale owners, and the CLI going through a server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from cli.main import cli
from rag.errors import DataDirOwnedError
from rag.owner import OWNER_FILE, Ownership, current_owner
from tests.serve_process import ROOT, rag_env, start_server


def invoke(data: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data)], env=env)


def json_of(data: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    res = invoke(data, *args, "--json", env=env)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def one_line_error(res: Any) -> str:
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return str(lines[0])


# -- the record ------------------------------------------------------------------------------------


def test_owner_record_names_the_owner_and_goes_with_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert current_owner(data) is None
    with Ownership.acquire(data, "ingest", command="rag ingest") as owned:
        owner = current_owner(data)
        assert owner is not None and owner == owned.record and owner.kind == "ingest"
        assert (data / OWNER_FILE).stat().st_mode & 0o077 == 0  # readable by its user only
        with pytest.raises(DataDirOwnedError, match=r"owned by `rag ingest` \(pid \d+"):
            Ownership.acquire(data, "server", url="http://127.0.0.1:1", wait_s=0.1)
    assert current_owner(data) is None
    assert not (data / OWNER_FILE).exists()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from rag.owner import Ownership
    Ownership.acquire(Path(sys.argv[1]), "server", url="http://127.0.0.1:9", command="rag serve")
    print("owned", flush=True)
    time.sleep(120)
    """
)


def test_a_killed_owner_is_detected_and_taken_over(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data)],
        cwd=ROOT,
        env=rag_env(data),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "owned"
        owner = current_owner(data)
        assert owner is not None and owner.pid == proc.pid and owner.kind == "server"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert (data / OWNER_FILE).exists()  # the record stays behind...
    assert current_owner(data) is None  # ...but its lock died with the process
    res = invoke(data, "ingest", str(tmp_path))  # so commands run here again
    assert res.exit_code == 0, res.output
    with Ownership.acquire(data, "ingest") as owned:
        assert owned.taken_over is None  # the ingest released its record cleanly
    (data / OWNER_FILE).write_text(json.dumps({"kind": "server", "pid": proc.pid, "host": "x", "since": 1}))
    with Ownership.acquire(data, "server", url="http://127.0.0.1:2") as owned:
        assert owned.taken_over is not None and owned.taken_over.pid == proc.pid


def test_writes_wait_for_an_owning_ingest_reads_do_not(tmp_path: Path, notes_dir: Path) -> None:
    data = tmp_path / "data"
    assert invoke(data, "ingest", str(notes_dir)).exit_code == 0
    with Ownership.acquire(data, "ingest", command="rag ingest"):
        for args in (
            ("ingest", str(notes_dir)),
            ("delete", "todo.txt"),
            ("ingest", str(notes_dir), "--watch"),
        ):
            line = one_line_error(invoke(data, *args))
            assert "is owned by `rag ingest` (pid" in line and "wait for that ingest" in line
        hits = json_of(data, "search", "ollama GPU")["hits"]  # read-only, here
        assert hits and hits[0]["source"] == "docker/gpu.md"
        assert len(json_of(data, "documents")["documents"]) == 2


# -- a server owns it ------------------------------------------------------------------------------


def test_cli_beside_a_server_goes_through_it_with_the_same_output(tmp_path: Path, notes_dir: Path) -> None:
    data = tmp_path / "data"
    json_of(data, "ingest", str(notes_dir))
    local_search = json_of(data, "search", "ollama GPU", "-k", "3")
    local_docs = json_of(data, "documents")
    local_ask = json_of(data, "ask", "which port does ollama use?", "--no-llm")
    local_entity = json_of(data, "graph", "entity", "ollama")
    server = start_server(data)
    try:
        owner = current_owner(data)
        assert owner is not None and owner.kind == "server" and owner.url == server.url
        served = json_of(data, "search", "ollama GPU", "-k", "3")
        assert {**served, "took_ms": 0} == {**local_search, "took_ms": 0}
        assert json_of(data, "documents") == local_docs
        asked = json_of(data, "ask", "which port does ollama use?", "--no-llm")
        assert asked["answer"] == local_ask["answer"] and asked["citations"] == local_ask["citations"]
        assert json_of(data, "graph", "entity", "ollama") == local_entity
        line = one_line_error(invoke(data, "graph", "export"))
        assert "cannot export the graph" in line and "owned by `rag serve`" in line

        (notes_dir / "new.md").write_text("# Zebra\n\nzebra giraffe okapi\n", encoding="utf-8")
        report = json_of(data, "ingest", str(notes_dir))  # a job of the server
        assert report["added"] == 1 and report["unchanged"] == 2 and "generation" not in report
        assert json_of(data, "search", "zebra okapi")["hits"][0]["source"] == "new.md"

        deleted = json_of(data, "delete", "new.md")
        assert set(deleted) == {"deleted", "doc_id", "source", "chunks", "removed_file"}
        assert deleted["deleted"] is True and deleted["source"] == "new.md"
        assert not any(h["source"] == "new.md" for h in json_of(data, "search", "zebra okapi")["hits"])
        again = invoke(data, "delete", deleted["doc_id"])
        assert again.exit_code == 2 and "no document" in one_line_error(again)
        assert [d["source"] for d in json_of(data, "documents")["documents"]] == ["docker/gpu.md", "todo.txt"]

        line = one_line_error(invoke(data, "ingest", str(notes_dir), "--watch"))
        assert f"owned by `rag serve` (pid {server.proc.pid}" in line and "rag serve --watch" in line
        refused = subprocess.run(
            [sys.executable, "-m", "cli.main", "serve", "--port", "1"],
            cwd=ROOT,
            env=rag_env(data),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 3 and "is owned by `rag serve`" in refused.stderr
        assert "Traceback" not in refused.stderr
        health = httpx.get(f"{server.url}/health", trust_env=False).json()
        assert health["status"] == "ok" and health["index"]["in_sync"] is True
    finally:
        code, log = server.stop(signal.SIGTERM)
    assert code == 0, log
    assert "Traceback" not in log and "shutdown failed" not in log.lower()
    assert current_owner(data) is None and not (data / OWNER_FILE).exists()


def test_a_server_with_a_key_needs_it_from_the_cli(tmp_path: Path, notes_dir: Path) -> None:
    data = tmp_path / "data"
    json_of(data, "ingest", str(notes_dir))
    env = rag_env(data, RAG_API__API_KEY="s3cret-key")
    server = start_server(data, env=env)
    try:
        record = (data / OWNER_FILE).read_text()
        assert "s3cret-key" not in record and json.loads(record)["auth"] is True
        line = one_line_error(invoke(data, "search", "ollama"))
        assert "wants a key" in line and "RAG_API__API_KEY" in line
        wrong = invoke(data, "search", "ollama", env={"RAG_API__API_KEY": "nope"})
        assert wrong.exit_code == 2 and "refused the key" in one_line_error(wrong)
        hits = json_of(data, "search", "ollama GPU", env={"RAG_API__API_KEY": "s3cret-key"})["hits"]
        assert hits[0]["source"] == "docker/gpu.md"
    finally:
        code, log = server.stop()
    assert code == 0, log


def test_a_server_killed_with_sigkill_is_taken_over_on_restart(tmp_path: Path, notes_dir: Path) -> None:
    data = tmp_path / "data"
    json_of(data, "ingest", str(notes_dir))
    first = start_server(data)
    first.stop(signal.SIGKILL)
    assert (data / OWNER_FILE).exists() and current_owner(data) is None
    # with the server gone, commands run here again
    assert json_of(data, "search", "ollama GPU")["hits"][0]["source"] == "docker/gpu.md"
    second = start_server(data)
    try:
        assert "taking over" in second.log.read_text()
        owner = current_owner(data)
        assert owner is not None and owner.pid == second.proc.pid
        assert json_of(data, "search", "ollama GPU")["hits"][0]["source"] == "docker/gpu.md"
    finally:
        code, log = second.stop()
    assert code == 0, log


def test_opening_the_chunk_store_to_read_writes_nothing(tmp_path: Path, notes_dir: Path) -> None:
    """A reader beside an owning ingest opens the store without a write transaction: it neither
    waits for the ingest's transaction nor takes the write lock itself."""
    import sqlite3
    import time

    from rag.store import ChunkStore

    data = tmp_path / "data"
    json_of(data, "ingest", str(notes_dir))
    writer = sqlite3.connect(data / "chunks.sqlite3", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # the owner is in the middle of a write
        t0 = time.monotonic()
        with ChunkStore(data, create=False) as store:
            assert store.count_documents() == 2
        assert time.monotonic() - t0 < 2.0  # opening used to wait for the lock (30 s timeout)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
