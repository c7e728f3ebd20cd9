"""Each file's status beside the chunk store: indexed, pending or failed (with its reason).

Indexed files are the chunk store's documents. What the store cannot say is
kept here, in ``<data_dir>/files.json``, written only by the process that owns
the data dir (:mod:`rag.owner`) and read by anyone:

* ``pending``: files a watcher or a queued ingest has seen change and not yet
  ingested (a path that no longer exists is pending its removal);
* ``failed``: files the last ingest that covered them could not read, with the
  reason; a failed file has no chunks.

:func:`document_rows` merges the two into the rows `rag documents --json` and
``GET /v1/documents`` list.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from rag.store import DocumentRecord

STATUS_FILE = "files.json"
UPLOADS_DIR = "uploads"

FileState = Literal["indexed", "pending", "failed"]


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


class FileStatusBook:
    """Pending and failed files of one data dir; thread-safe; saved on every change."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / STATUS_FILE
        self._lock = threading.Lock()
        data = read_status(Path(data_dir))
        self._failed: dict[str, dict[str, Any]] = data["failed"]
        self._pending: dict[str, dict[str, Any]] = {}  # a new owner starts with nothing pending
        if data["pending"]:
            self._save()

    def mark_pending(self, paths: Mapping[str, str]) -> None:
        """``{absolute path: source}`` are waiting to be ingested."""
        if not paths:
            return
        now = time.time()
        with self._lock:
            for path, source in paths.items():
                self._pending.setdefault(path, {"source": source, "since": now})
            self._save()

    def settle(
        self, covered: Iterable[Path | str], failed: Mapping[str, str], sources: Mapping[str, str]
    ) -> None:
        """An ingest of ``covered`` (files and folders) finished: whatever was pending or failed
        under them is settled; ``failed`` (absolute path -> reason) failed this time."""
        roots = [str(Path(p).expanduser().resolve()) for p in covered]
        now = time.time()
        with self._lock:
            self._pending = {p: v for p, v in self._pending.items() if not _under(p, roots)}
            self._failed = {p: v for p, v in self._failed.items() if not _under(p, roots)}
            for path, reason in failed.items():
                self._failed[path] = {
                    "source": sources.get(path, Path(path).name),
                    "error": reason,
                    "at": now,
                }
                self._pending.pop(path, None)
            self._save()

    def forget(self, path: str) -> None:
        with self._lock:
            if self._failed.pop(path, None) is not None or self._pending.pop(path, None) is not None:
                self._save()

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        with self._lock:
            return {"failed": dict(self._failed), "pending": dict(self._pending)}

    def _save(self) -> None:
        tmp = self.path.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
        body = json.dumps({"failed": self._failed, "pending": self._pending}, ensure_ascii=False)
        try:
            tmp.write_text(body, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()


def read_status(data_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """What ``files.json`` says (empty when it is missing or unreadable)."""
    try:
        data = json.loads((Path(data_dir) / STATUS_FILE).read_text(encoding="utf-8"))
        return {"failed": dict(data.get("failed", {})), "pending": dict(data.get("pending", {}))}
    except (OSError, ValueError, AttributeError):
        return {"failed": {}, "pending": {}}


def document_rows(
    docs: Iterable[DocumentRecord], status: Mapping[str, Mapping[str, Mapping[str, Any]]], data_dir: Path
) -> list[dict[str, Any]]:
    """One row per file, sorted by source: each indexed document (``status`` ``indexed``, or
    ``pending`` when a newer version waits), then each failed or pending file that has no
    document, with ``error`` saying why it failed."""
    uploads = str((Path(data_dir) / UPLOADS_DIR).resolve())
    failed, pending = status.get("failed", {}), status.get("pending", {})
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for d in docs:
        seen.add(d.path)
        state: FileState = "pending" if d.path in pending else "indexed"
        rows.append(
            {**d.listing(), "status": state, "error": None, "uploaded": str(Path(d.path).parent) == uploads}
        )
    for kind, table in (("failed", failed), ("pending", pending)):
        for path, info in table.items():
            if path in seen:
                continue
            seen.add(path)
            rows.append(
                {
                    "doc_id": None,
                    "source": info.get("source", Path(path).name),
                    "path": path,
                    "format": None,
                    "pages": None,
                    "chunks": 0,
                    "encoding": None,
                    "notes": [],
                    "ingested_at": None,
                    "status": kind,
                    "error": info.get("error") if kind == "failed" else None,
                    "uploaded": str(Path(path).parent) == uploads,
                }
            )
    rows.sort(key=lambda r: (r["source"], r["path"]))
    return rows
