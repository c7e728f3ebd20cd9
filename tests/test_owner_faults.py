"""Faults around a serving data dir: many CLI processes beside `rag serve --watch`, and SIGKILL.

Every `rag` command here is its own process, as a user's would be. The fast versions run in
the default tier; the long ones (more processes, longer, the e5-small dense leg in the
embedded vector store) are ``slow``.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve_process import Server, rag, rag_env, rag_json, start_server, wait_until

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def write_notes(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"n{i:03d}.md").write_text(
            f"# Note {i}\n\n{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]} item{chr(97 + i % 26)}\n",
            encoding="utf-8",
        )


def idle(server: Server) -> bool:
    health = httpx.get(f"{server.url}/health", timeout=10, trust_env=False).json()
    return bool(health["status"] == "ok" and health["jobs"] == {"queued": 0, "running": 0})


def state(data: Path, env: dict[str, str]) -> dict[str, Any]:
    """What a user can see of an index: the documents and, per query, the chunks found."""
    docs = rag_json(data, "documents", env=env)["documents"]
    queries = data.parent / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": w, "text": w}) + "\n" for w in WORDS), encoding="utf-8")
    res = rag(data, "search", "--batch", str(queries), "-k", "100", "--mode", "sparse", env=env)
    assert res.returncode == 0, res.stderr
    found = {}
    for line in res.stdout.splitlines():
        row = json.loads(line)
        found[row["_id"]] = sorted((h["source"], h["chunk_id"]) for h in row["hits"])
    assert set(found) == set(WORDS)
    return {
        "documents": sorted((d["source"], d["chunks"], d["status"]) for d in docs),
        "found": found,
    }


def fresh_state(folder: Path, tmp_path: Path, env_extra: dict[str, str]) -> dict[str, Any]:
    fresh = tmp_path / "fresh"
    env = rag_env(fresh, **env_extra)
    res = rag(fresh, "ingest", str(folder), "--json", env=env)
    assert res.returncode == 0, res.stderr
    return state(fresh, env)


def check_stores(data: Path) -> None:
    """No store reports damage: SQLite integrity checks on the chunk store and the graph."""
    for db in [data / "chunks.sqlite3", *data.glob("graph/*.sqlite3")]:
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", db


def run_fault_mix(
    tmp_path: Path, *, seconds: float, workers: int, n_notes: int, env_extra: dict[str, str]
) -> None:
    folder = tmp_path / "notes"
    extra = tmp_path / "extra"
    extra.mkdir()
    write_notes(folder, n_notes)
    data = tmp_path / "data"
    env = rag_env(data, **env_extra)
    server = start_server(data, "--watch", str(folder), env=env)
    failures: list[str] = []
    deleted: list[str] = []
    counts: dict[str, int] = {}
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def check(res: Any, what: str) -> None:
        with lock:
            counts[what] = counts.get(what, 0) + 1
            if res.returncode != 0:
                failures.append(f"{what}: exit {res.returncode}: {res.stderr.strip()[-300:]}")

    def searcher(rng: random.Random) -> None:
        check(rag(data, "search", rng.choice(WORDS), "--json", env=env), "search")

    def asker(rng: random.Random) -> None:
        check(rag(data, "ask", f"what about {rng.choice(WORDS)}?", "--no-llm", "--json", env=env), "ask")

    def ingester(rng: random.Random) -> None:
        check(rag(data, "ingest", str(folder), "--json", env=env), "ingest")

    def deleter(rng: random.Random) -> None:
        name = f"x{rng.randrange(10**9)}.md"
        (extra / name).write_text(f"# extra\n\n{rng.choice(WORDS)} extra{name}\n", encoding="utf-8")
        check(rag(data, "ingest", str(extra / name), "--json", env=env), "ingest-extra")
        res = rag(data, "delete", str(extra / name), "--json", env=env)
        check(res, "delete")
        if res.returncode == 0:
            with lock:
                deleted.append(name)

    def editor(rng: random.Random) -> None:
        i = rng.randrange(n_notes + 5)
        path = folder / f"n{i:03d}.md"
        if rng.random() < 0.2 and path.exists():
            path.unlink()
        else:
            # one temp name per editor thread: two editors saving the same note must not share it
            tmp = folder / f".{path.name}.{threading.get_ident()}.swp"
            tmp.write_text(f"# Note {i} v{rng.random()}\n\n{rng.choice(WORDS)} edited\n", encoding="utf-8")
            tmp.replace(path)  # an editor's atomic save
        time.sleep(0.3)

    roles: list[Callable[[random.Random], None]] = [searcher, asker, ingester, deleter, editor]

    def loop(role: Callable[[random.Random], None], seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            try:
                role(rng)
            except Exception as exc:  # a test helper failing is a failure too
                with lock:
                    failures.append(f"{role.__name__}: {type(exc).__name__}: {exc}")

    try:
        threads = [
            threading.Thread(target=loop, args=(roles[n % len(roles)], n), daemon=True)
            for n in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 300)
        assert not any(t.is_alive() for t in threads)
        assert not failures, failures
        assert counts.get("delete", 0) >= 1 and len(deleted) == counts["delete"]  # every delete completed
        wait_until(lambda: idle(server), timeout=120, step=0.2)
        health = httpx.get(f"{server.url}/health", timeout=10, trust_env=False).json()
        assert health["index"]["in_sync"] is True
        served = state(data, env)
    finally:
        code, log = server.stop()
    assert code == 0, log
    assert "Traceback" not in log and "is unusable" not in log and "shutdown failed" not in log.lower()
    check_stores(data)
    assert served == fresh_state(folder, tmp_path, env_extra)
    # and the data dir opens whole once the server is gone (here, with every leg)
    assert state(data, env) == served


def test_cli_processes_beside_a_watching_server(tmp_path: Path) -> None:
    run_fault_mix(tmp_path, seconds=5, workers=5, n_notes=12, env_extra={})


@pytest.mark.slow
def test_cli_processes_beside_a_watching_server_long_with_dense(tmp_path: Path) -> None:
    pytest.importorskip("qdrant_edge")
    run_fault_mix(
        tmp_path,
        seconds=60,
        workers=10,
        n_notes=30,
        env_extra={"RAG_EMBEDDING__MODEL": "e5-small", "RAG_MODEL_DIR": str(tmp_path / "models")},
    )


def test_sigkill_during_a_publish_then_restart_is_consistent(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    write_notes(folder, 5)
    data = tmp_path / "data"
    env = rag_env(data, RAG_API__PUBLISH_INTERVAL_S="0.05")
    server = start_server(data, "--watch", str(folder), env=env)
    wait_until(lambda: idle(server), timeout=60)
    for i in range(5, 250):  # a burst whose sync publishes many times
        (folder / f"n{i:03d}.md").write_text(f"# Note {i}\n\n{WORDS[i % 10]} burst{i}\n", encoding="utf-8")

    def publishing() -> bool:
        health = httpx.get(f"{server.url}/health", timeout=10, trust_env=False).json()
        return (
            bool(health["jobs"]["running"])
            and (health["index"]["last_publish"] or {}).get("generation", 0) > 1
        )

    wait_until(publishing, timeout=60, step=0.01)
    code, _ = server.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL
    check_stores(data)
    again = start_server(data, "--watch", str(folder), env=env)  # takes the data dir over
    try:
        assert "taking over" in again.log.read_text()
        wait_until(lambda: idle(again), timeout=120, step=0.2)
        health = httpx.get(f"{again.url}/health", timeout=10, trust_env=False).json()
        assert health["index"]["in_sync"] is True and health["index"]["documents"] == 250
        served = state(data, env)
    finally:
        code, log = again.stop()
    assert code == 0, log
    assert served == fresh_state(folder, tmp_path, {})


def test_rag_ingest_watch_owns_syncs_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.serve_process import ROOT

    folder = tmp_path / "notes"
    write_notes(folder, 3)
    data = tmp_path / "data"
    env = rag_env(data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "ingest", str(folder), "--watch", "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert '"added": 3' in first
        owner = rag(data, "ingest", str(folder), env=env)
        assert owner.returncode == 3 and "owned by `rag ingest --watch`" in owner.stderr
        (folder / "new.md").write_text("# New\n\nquokka wombat\n", encoding="utf-8")
        synced = proc.stdout.readline()
        assert '"added": 1' in synced
        hits = rag_json(data, "search", "quokka", env=env)["hits"]  # read-only beside the owner
        assert [h["source"] for h in hits] == ["new.md"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_sigterm_during_an_ingest_job_exits_0_and_keeps_what_was_committed(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    write_notes(folder, 600)
    data = tmp_path / "data"
    env = rag_env(data)
    server = start_server(data, env=env)
    job = httpx.post(f"{server.url}/v1/ingest", json={"paths": [str(folder)]}, trust_env=False).json()

    def running() -> bool:
        state = httpx.get(f"{server.url}/v1/jobs/{job['id']}", trust_env=False).json()
        return bool(state["status"] == "running" and state["progress"].get("done", 0) > 0)

    wait_until(running, timeout=60, step=0.01)
    t0 = time.monotonic()
    code, log = server.stop(signal.SIGTERM)
    assert code == 0, log
    assert time.monotonic() - t0 < 30
    assert "Traceback" not in log and "shutdown failed" not in log.lower()
    check_stores(data)
    again = start_server(data, env=env)  # what was committed is there; a re-run finishes the rest
    try:
        report = rag_json(data, "ingest", str(folder), env=env)
        assert report["added"] + report["unchanged"] == 600 and report["documents"] == 600
    finally:
        code, log = again.stop()
    assert code == 0, log
