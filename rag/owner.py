"""Who owns a data dir: one process at a time (a server or an ingest), advertised in the dir.

The owner holds an exclusive ``flock`` on ``<data_dir>/.owner.lock`` for as long as it
runs and describes itself in ``<data_dir>/owner.json``: its kind (``server`` or
``ingest``), pid, host name, since when, and for a server the URL other `rag`
commands reach it at and whether it wants a key. The lock is what counts; the
record only says who holds it. The kernel drops a ``flock`` when its process
dies, however it dies, so a record whose lock is free is stale (its owner was
killed) and the next process simply takes the data dir over.

The record never holds a key. A server with keys says ``"auth": true``; a
command that goes through it sends the key from its own settings
(``RAG_API__API_KEY``, or ``RAG_API__WRITE_KEY`` / ``RAG_API__READ_KEY``), the
same variables the server read. The record is written with mode 0600 all the
same.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rag.errors import DataDirOwnedError

OWNER_FILE = "owner.json"
LOCK_FILE = ".owner.lock"

OwnerKind = Literal["server", "ingest"]


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    kind: OwnerKind
    pid: int
    host: str
    since: float
    url: str | None = None
    auth: bool = False
    command: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OwnerRecord:
        return cls(
            kind=data["kind"],
            pid=int(data["pid"]),
            host=str(data.get("host", "")),
            since=float(data["since"]),
            url=data.get("url"),
            auth=bool(data.get("auth", False)),
            command=str(data.get("command", "")),
        )

    def describe(self) -> str:
        """``rag serve (pid 123, since 14:02, http://127.0.0.1:8000)``."""
        when = time.strftime("%H:%M:%S", time.localtime(self.since))
        name = self.command or ("rag serve" if self.kind == "server" else "rag ingest")
        where = f", {self.url}" if self.url else ""
        return f"`{name}` (pid {self.pid}, since {when}{where})"


def _read(data_dir: Path) -> OwnerRecord | None:
    try:
        return OwnerRecord.from_dict(json.loads((data_dir / OWNER_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _lock_held(data_dir: Path) -> bool:
    """Whether some process holds the owner lock (probed with a shared lock, let go at once)."""
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def current_owner(data_dir: Path, *, wait_s: float = 1.0) -> OwnerRecord | None:
    """The live owner of ``data_dir``, or None when nobody owns it (a stale record counts as none).

    An owner that has just taken the lock may not have written its record yet: that is
    waited for, up to ``wait_s``.
    """
    data_dir = Path(data_dir)
    deadline = time.monotonic() + wait_s
    while True:
        if not _lock_held(data_dir):
            return None
        record = _read(data_dir)
        if record is not None and (record.host != socket.gethostname() or _alive(record.pid)):
            return record
        if time.monotonic() >= deadline:
            return record
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ownership:
    """This process's hold on a data dir; :meth:`release` (or process exit) gives it up."""

    def __init__(self, data_dir: Path, fd: int, record: OwnerRecord, taken_over: OwnerRecord | None) -> None:
        self.data_dir = data_dir
        self.record = record
        self.taken_over = taken_over  # the stale record found at start, if any
        self._fd: int | None = fd

    @classmethod
    def acquire(
        cls,
        data_dir: Path,
        kind: OwnerKind,
        *,
        url: str | None = None,
        auth: bool = False,
        command: str = "",
        wait_s: float = 2.0,
    ) -> Ownership:
        """Own ``data_dir`` or raise :class:`~rag.errors.DataDirOwnedError` naming the owner.

        A probe by another process holds the lock for microseconds, so a failed attempt is
        retried for up to ``wait_s`` before the data dir counts as owned.
        """
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise owned_error(data_dir, current_owner(data_dir)) from None
                time.sleep(0.02)
        stale = _read(data_dir)
        record = OwnerRecord(
            kind=kind,
            pid=os.getpid(),
            host=socket.gethostname(),
            since=time.time(),
            url=url,
            auth=auth,
            command=command,
        )
        try:
            _write(data_dir, record)
        except OSError:
            os.close(fd)
            raise
        return cls(data_dir, fd, record, stale)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if _read(self.data_dir) == self.record:
                (self.data_dir / OWNER_FILE).unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)  # drops the lock
        self._fd = None

    def __enter__(self) -> Ownership:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _write(data_dir: Path, record: OwnerRecord) -> None:
    tmp = data_dir / f".{OWNER_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record.as_dict(), f)
    os.replace(tmp, data_dir / OWNER_FILE)


def owned_error(data_dir: Path, owner: OwnerRecord | None, *, doing: str = "") -> DataDirOwnedError:
    """The one-line error for a command that cannot run while ``owner`` holds ``data_dir``."""
    what = f"cannot {doing}: " if doing else ""
    if owner is None:
        return DataDirOwnedError(
            f"{what}{data_dir} is owned by another process", hint="wait for it to finish"
        )
    if owner.kind == "server":
        hint = f"stop that server first, or use it: commands on this data dir go through {owner.url}"
    else:
        hint = "wait for that ingest to finish (searches and asks work meanwhile), or stop it"
    return DataDirOwnedError(f"{what}{data_dir} is owned by {owner.describe()}", hint=hint)
