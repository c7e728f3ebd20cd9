"""The one write path: ingest files (or delete a document), then publish to the legs.

`rag ingest`, the server's jobs (uploads, `rag ingest` through the server,
deletes) and the folder watcher all write through these two functions, so
"commit to the chunk store, then bring every leg to it under the data dir's
writer lock" is written once. The engine decides what publishing means: a
plain :class:`~rag.engine.Engine` syncs its legs in place; a
:class:`~rag.serving.ServingEngine` swaps in a new consistent state beside
the searches (see :mod:`rag.serving`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest import pipeline
from ingest.pipeline import IngestReport
from rag.engine import Engine, Published
from rag.errors import NotFoundError, RagError, StoreLockedError
from rag.filestatus import FileStatusBook
from rag.retrieval.legs import ProgressFn
from rag.serving import ServingEngine, ServingWriter
from rag.settings import Settings
from rag.store import ChunkStore, DocumentRecord

#: How long a publish waits for a leg another process holds for a moment (a search, say).
LEG_WAIT_S = 30.0


class Cancelled(RagError):
    """The write was stopped (the server or the watcher is shutting down); committed work is kept."""

    hint = "re-run it: files already committed are not read again"


@dataclass
class IngestOutcome:
    report: IngestReport
    publishes: list[Published] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The ``rag ingest --json`` object."""
        return self.report.as_dict()

    def job_dict(self, engine: Engine) -> dict[str, Any]:
        """The ingest result a server job reports: the ``rag ingest --json`` object, plus publishing facts."""
        out = self.as_dict()
        out["generation"] = engine.store.generation()
        out["publishes"] = len(self.publishes)
        out["max_locked_ms"] = round(max((p.locked_ms for p in self.publishes), default=0.0), 2)
        return out


def publish(
    engine: Engine,
    writer: ChunkStore,
    *,
    hold: bool = False,
    force: bool = False,
    progress: ProgressFn | None = None,
    wait_s: float = LEG_WAIT_S,
) -> Published | None:
    """``engine.publish()`` under the data dir's writer lock (already held when ``hold``).

    A leg another process holds for a moment (the embedded vector store while a read-only
    search has it open) is waited for, up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        if not hold:
            writer.acquire_writer_lock()
        try:
            published = engine.publish(force=force, progress=progress)
            if isinstance(engine, ServingEngine) and isinstance(writer, ServingWriter):
                engine.truncate_wal(writer)  # deferred while the snapshot was pinned
            return published
        except StoreLockedError:
            if time.monotonic() >= deadline:
                raise
        finally:
            if not hold:
                writer.release_writer_lock()
        time.sleep(0.2)


def ingest_and_publish(
    paths: Sequence[Path],
    settings: Settings,
    engine: Engine,
    writer: ChunkStore,
    *,
    progress: ProgressFn | None = None,
    publish_progress: ProgressFn | None = None,
    publish_every_s: float | None = None,
    status: FileStatusBook | None = None,
    cancel: threading.Event | None = None,
) -> IngestOutcome:
    """Sync ``paths`` into the chunk store through ``writer``, then publish.

    With ``publish_every_s``, what is committed so far is also published that often during a
    long ingest (each step consistent). ``status`` learns which files failed and which are
    settled. Setting ``cancel`` stops the ingest after the current file, or while the dense leg
    embeds, after its current batch (:class:`Cancelled`).
    """
    publishes: list[Published] = []
    last = time.monotonic()

    def leg_step(done: int, total: int, item: str) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("the ingest was stopped; what the dense leg embedded is kept")
        if publish_progress is not None:
            publish_progress(done, total, item)

    def step(done: int, total: int, item: str) -> None:
        nonlocal last
        if cancel is not None and cancel.is_set():
            raise Cancelled("the ingest was stopped")
        if progress is not None:
            progress(done, total, item)
        if publish_every_s is not None and time.monotonic() - last >= publish_every_s:
            # sync_paths holds the writer lock and has committed everything before this file;
            # the dense leg's batches in this publish stop on ``cancel`` too
            published = publish(engine, writer, hold=True, progress=leg_step)
            if published:
                publishes.append(published)
            last = time.monotonic()

    t0 = time.perf_counter()
    report = pipeline.sync_paths(list(paths), settings, writer, progress=step)
    if status is not None:
        # failed and failed_paths are filled together, in the same order
        sources = {path: row["path"] for path, row in zip(report.failed_paths, report.failed, strict=False)}
        status.settle(paths, report.failed_paths, sources)

    final = publish(engine, writer, progress=leg_step)
    if final:
        publishes.append(final)
    # phases: the pipeline's own, then each leg's across every publish (those made during the
    # sync replace the pipeline's "publish" share, which is the same time)
    phases = {k: v for k, v in report.phases.items() if k != "publish"}
    for published in publishes:
        for name, seconds in published.phases.items():
            phases[name] = phases.get(name, 0.0) + seconds
    report.phases = phases
    report.took_s = time.perf_counter() - t0
    return IngestOutcome(report, publishes)


def delete_and_publish(
    engine: Engine, writer: ChunkStore, doc_id: str, *, status: FileStatusBook | None = None
) -> tuple[DocumentRecord, Published | None]:
    """Remove one document from the chunk store and every leg; NotFoundError when unknown."""
    writer.acquire_writer_lock()
    try:
        record = writer.document(doc_id)
        if record is None:
            raise NotFoundError(f"no document {doc_id}", hint="`rag documents` lists them")
        with writer.transaction() as tx:
            tx.delete_document(doc_id)
        published = publish(engine, writer, hold=True)
    finally:
        writer.release_writer_lock()
    if status is not None:
        status.forget(record.path)
    return record, published
