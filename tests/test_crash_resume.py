"""kill -9 during `rag ingest`, then re-run: same final state as an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _make_folder(root: Path, n: int) -> None:
    rng = random.Random(7)
    words = [
        "docker",
        "ollama",
        "GPU",
        "显存",
        "模型",
        "端口",
        "11434",
        "qdrant",
        "检索",
        "向量",
        "`--gpus all`",
    ]
    for i in range(n):
        sub = root / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        body = "\n\n".join(
            f"## 小节 {j}\n\n" + "，".join(rng.choice(words) for _ in range(120)) + "。" for j in range(4)
        )
        (sub / f"note_{i:04d}.md").write_text(f"# 笔记 {i}\n\n{body}\n", encoding="utf-8")


def _ingest_cmd(folder: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "cli.main", "ingest", str(folder), "--data-dir", str(data), "--json"]


def _env() -> dict[str, str]:
    # sparse leg only: this test is about the chunk store and the derived index staying consistent
    return {
        **os.environ,
        "RAG_INGEST__COMMIT_EVERY": "4",
        "RAG_EMBEDDING__MODEL": "none",
        "PYTHONPATH": str(REPO),
    }


def _state(data: Path) -> tuple[list[tuple], list[tuple]]:
    db = sqlite3.connect(data / "chunks.sqlite3")
    docs = db.execute(
        "SELECT doc_id, source, content_hash, n_chunks FROM documents ORDER BY doc_id"
    ).fetchall()
    chunks = db.execute(
        "SELECT chunk_id, doc_id, ordinal, start, end, text FROM chunks ORDER BY chunk_id"
    ).fetchall()
    orphans = db.execute(
        "SELECT COUNT(*) FROM chunks WHERE doc_id NOT IN (SELECT doc_id FROM documents)"
    ).fetchone()
    assert orphans[0] == 0
    db.close()
    return docs, chunks


def test_kill_9_then_rerun_matches_uninterrupted_run(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    _make_folder(folder, 240)

    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    done = subprocess.run(_ingest_cmd(folder, ref), env=_env(), capture_output=True, text=True, timeout=600)
    full_s = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 240

    crashed = tmp_path / "crashed"
    kills = 0
    for frac in (0.35, 0.55, 0.75, 0.9):
        proc = subprocess.Popen(
            _ingest_cmd(folder, crashed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(full_s * frac)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 1, "the ingest finished before any kill; the folder is too small for this machine"

    final = subprocess.run(
        _ingest_cmd(folder, crashed), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["documents"] == 240 and summary["failed"] == []
    assert _state(crashed) == _state(ref)

    # a further re-run finds nothing to do
    again = subprocess.run(
        _ingest_cmd(folder, crashed), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert json.loads(again.stdout)["unchanged"] == 240
