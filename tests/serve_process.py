"""Helpers (no tests here): `rag serve` and other `rag` commands as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rag_env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        {
            "RAG_DATA_DIR": str(data),
            "RAG_EMBEDDING__MODEL": "none",
            "RAG_LLM__BACKEND": "none",
            "RAG_INGEST__WORKERS": "1",
            "RAG_API__PUBLISH_INTERVAL_S": "0.2",
            "RAG_INGEST__WATCH_DEBOUNCE_MS": "100",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def rag(
    data: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """One `rag` command in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=env or rag_env(data),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rag_json(data: Path, *args: str, **kw: Any) -> Any:
    res = rag(data, *args, "--json", **kw)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        """Send ``sig`` and wait; (exit code, everything it printed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode), self.log.read_text(encoding="utf-8", errors="replace")


def start_server(data: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 90) -> Server:
    """`rag serve` on a free loopback port, once ``/health`` answers 200 (bounded wait)."""
    port = free_port()
    log = data.parent / f"serve-{port}.log"
    data.mkdir(parents=True, exist_ok=True)
    out = log.open("w", encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port), *extra],
        cwd=ROOT,
        env=env or rag_env(data),
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"rag serve exited with {proc.returncode}: {log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                return Server(proc, url, log)
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"rag serve did not become healthy: {log.read_text()}")
        time.sleep(0.1)


@contextlib.contextmanager
def serving(data: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    server = start_server(data, *extra, env=env)
    try:
        yield server
    finally:
        server.stop()


def wait_until(check: Any, timeout: float = 30.0, step: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
