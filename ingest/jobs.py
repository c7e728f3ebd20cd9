"""Background writes: one writer thread runs ingest, delete and watch jobs in order.

The server (:mod:`api`) submits jobs and reports them; what a job does lives
here, beside the one write path (:mod:`ingest.publish`) it goes through.

All writes to the data dir happen on this thread, through its own chunk-store
connection (see :mod:`rag.serving` for why readers and the writer never share
one), and through the one write path of :mod:`ingest.publish`: an ingest job
(an upload, a `rag ingest` sent by the CLI, a batch of changes the folder
watcher saw) commits whole documents, publishing what is committed every
``publish_interval_s`` and once more at the end; a delete job removes the
document and publishes. A job is ``done`` only after its publish, so a client
that polls ``GET /v1/jobs/{id}`` until ``done`` then finds the documents in
search.

When idle, the thread checks every ``publish_interval_s`` whether another
process (``rag ingest`` on the same data dir) committed changes, and publishes
them.

Cancelling (:meth:`JobRunner.cancel_job`, ``POST /v1/jobs/{id}/cancel``): a queued
job is dropped; a running ingest, watch or sync job stops after its current file,
or, while the dense leg embeds, after its current batch. What it committed stays:
the chunk store and the BMX index are published (searchable), and the dense leg
keeps every batch it embedded (the embedding cache) and resumes on the next
publish (the next ingest of any file, a re-run of the same one, a server
restart). The job ends ``failed`` with the error type ``cancelled``, as a job the
stopping server cut short does.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ingest.publish import LEG_WAIT_S, Cancelled, delete_and_publish, ingest_and_publish, publish
from ingest.watch import sync_roots
from rag.engine import Published
from rag.errors import NotFoundError, RagError, error_dict
from rag.filestatus import FileStatusBook
from rag.retrieval.legs import ProgressFn
from rag.serving import ServingEngine, ServingWriter
from rag.settings import Settings
from rag.store import ChunkStore, DocumentRecord

log = logging.getLogger("rag.jobs")

JobKind = Literal["ingest", "delete", "sync", "watch"]
JobStatus = Literal["queued", "running", "done", "failed"]
KEEP_JOBS = 1000  # finished jobs remembered for polling
#: A job's error when it failed on a bug (the traceback goes to the log, never to a client).
INTERNAL_ERROR = {"type": "internal_error", "message": "internal server error", "hint": "see the server log"}


@dataclass
class Job:
    id: str
    kind: JobKind
    paths: list[Path] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    doc_id: str | None = None
    settings: Settings | None = field(default=None, repr=False)  # this job's own ingest settings
    status: JobStatus = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, int] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    exception: RagError | None = field(default=None, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    #: set to stop the job (a client cancelled it, or the server stops)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def pending(self) -> bool:
        return self.status in ("queued", "running")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "files": list(self.sources),
            "doc_id": self.doc_id,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": dict(self.progress),
            "result": self.result,
            "error": self.error,
        }


class JobRunner:
    """The writer thread and the table of jobs it ran or will run."""

    def __init__(
        self,
        engine: ServingEngine,
        settings: Settings,
        status: FileStatusBook | None = None,
        *,
        watch: list[Path] | None = None,
        on_deleted: Callable[[DocumentRecord], bool] | None = None,
    ) -> None:
        """``on_deleted(record)`` runs after a delete job and says whether it removed the file
        (the server removes an uploaded copy)."""
        self.engine = engine
        self.settings = settings
        self.on_deleted = on_deleted
        self.watch_roots = list(watch or [])
        self.status = status or FileStatusBook(settings.data_dir)
        self.cancel = threading.Event()
        self.interval = settings.api.publish_interval_s
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._writer: ChunkStore | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._writer = ServingWriter(self.settings.data_dir)
        self._thread = threading.Thread(target=self._run, name="rag-writer", daemon=True)
        self._thread.start()
        if self.engine.behind():  # legs saved at another generation than the store: catch up now
            self._submit(Job(self._new_id(), "sync"))

    def stop(self, timeout: float = 30.0) -> bool:
        """Finish the running job (queued ones are dropped); False if it did not end in time."""
        if self._thread is None:
            return True
        self.cancel.set()  # a running ingest stops after its current file (or dense batch)
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
                if job.status == "queued":
                    job.status = "failed"
                    job.error = {"type": "cancelled", "message": "the server stopped", "hint": None}
                    job.done.set()
        self._queue.put(None)
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        if not alive and self._writer is not None:
            self._writer.close()
            self._writer = None
        return not alive

    # -- submitting --------------------------------------------------------------------------------

    def _new_id(self) -> str:
        return f"job-{next(self._counter)}-{uuid.uuid4().hex[:8]}"

    def _submit(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP_JOBS:
                oldest = next(iter(self._jobs.values()))
                if oldest.pending:
                    break
                self._jobs.popitem(last=False)
        self._queue.put(job)
        return job

    def submit_ingest(self, paths: list[Path], sources: list[str], settings: Settings | None = None) -> Job:
        """Ingest ``paths`` (files and folders) with ``settings`` (default: the server's)."""
        return self._submit(Job(self._new_id(), "ingest", paths=paths, sources=sources, settings=settings))

    def submit_watch(self, changed: dict[str, str]) -> Job:
        """Sync the watched folders after ``changed`` ({path: source}); joins a sync still queued."""
        with self._lock:
            for job in reversed(self._jobs.values()):
                if job.kind == "watch" and job.status == "queued":
                    job.sources.extend(s for s in changed.values() if s not in job.sources)
                    return job
        return self._submit(
            Job(self._new_id(), "watch", paths=list(self.watch_roots), sources=list(changed.values()))
        )

    def submit_delete(self, doc_id: str, source: str) -> Job:
        return self._submit(Job(self._new_id(), "delete", doc_id=doc_id, sources=[source]))

    def cancel_job(self, job_id: str) -> Job | None:
        """Stop a job: a queued one never runs, a running one stops after its current file or
        dense batch (see the module docstring); a finished one stays as it ended. None when unknown."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            job.cancel.set()
            if job.status == "queued":
                job.status, job.finished_at = "failed", time.time()
                job.error = _cancelled_error("the job was cancelled before it started")
                job.done.set()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def recent(self, limit: int = 50) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())[-limit:][::-1]

    def pending_job_for(self, path: str) -> Job | None:
        """A queued or running ingest job that will (re)write the file at ``path``."""
        with self._lock:
            for job in self._jobs.values():
                if job.pending and job.kind == "ingest" and any(str(p) == path for p in job.paths):
                    return job
        return None

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = {"queued": 0, "running": 0}
            for job in self._jobs.values():
                if job.status in out:
                    out[job.status] += 1
            return out

    # -- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=self.interval)
            except queue.Empty:
                self._publish_external()
                continue
            if job is None:
                return
            if job.status != "queued":
                continue
            self._execute(job)

    def _execute(self, job: Job) -> None:
        with self._lock:
            if job.status != "queued":  # cancelled meanwhile
                return
            job.status, job.started_at = "running", time.time()
        try:
            if job.kind == "ingest":
                job.result = self._ingest(job)
            elif job.kind == "delete":
                job.result = self._delete(job)
            elif job.kind == "watch":
                job.result = self._watch(job)
            else:
                published = self._publish(hold=False, force=True, progress=self._leg_progress(job))
                job.result = {"published": published.as_dict() if published else None}
            job.status = "done"
        except Cancelled as exc:
            job.status, job.exception = "failed", exc
            if job.cancel.is_set() and not self.cancel.is_set():  # a client cancelled it
                job.error = _cancelled_error(f"the {job.kind} job was cancelled")
                self._publish_committed(job)
            else:
                job.error = error_dict(exc)
                job.error["type"] = "cancelled"
        except RagError as exc:
            job.status, job.error, job.exception = "failed", error_dict(exc), exc
        except Exception:
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            job.status, job.error = "failed", dict(INTERNAL_ERROR)
        finally:
            job.finished_at = time.time()
            job.done.set()

    def _publish(
        self,
        *,
        hold: bool,
        force: bool = False,
        wait_s: float = LEG_WAIT_S,
        progress: ProgressFn | None = None,
    ) -> Published | None:
        """Publish under the data dir's writer lock (held already when ``hold``)."""
        assert self._writer is not None
        return publish(self.engine, self._writer, hold=hold, force=force, wait_s=wait_s, progress=progress)

    def _leg_progress(self, job: Job) -> ProgressFn:
        """The legs' progress while ``job`` publishes: shown in the job's ``progress``
        (``embedded`` of ``to_embed``), and the point where a cancelled job stops (after a batch)."""

        def progress(done: int, total: int, item: str) -> None:
            if job.cancel.is_set():
                raise Cancelled(f"the {job.kind} job was cancelled; what the dense leg embedded is kept")
            if item == "embed":
                job.progress = {**job.progress, "embedded": done, "to_embed": total}

        return progress

    def _publish_committed(self, job: Job) -> None:
        """After ``job`` was cancelled: publish what it committed and searches do not see yet (chunk
        store, BMX, graph), leaving the dense leg to resume later (it stops before its first batch)."""
        assert self._writer is not None
        try:
            if self._writer.generation() == self.engine.generation():
                return  # published already (cancelled while the dense leg embedded)
            self._publish(hold=False, progress=self._leg_progress(job))
        except Cancelled:
            pass
        except Exception:
            log.error("publishing after job %s was cancelled failed:\n%s", job.id, traceback.format_exc())

    def _ingest(self, job: Job) -> dict[str, Any]:
        assert self._writer is not None

        def progress(done: int, total: int, item: str) -> None:
            job.progress = {"done": done, "total": total}

        outcome = ingest_and_publish(
            job.paths,
            job.settings or self.settings,
            self.engine,
            self._writer,
            progress=progress,
            publish_progress=self._leg_progress(job),
            publish_every_s=self.interval,
            status=self.status,
            cancel=job.cancel,
        )
        return outcome.job_dict(self.engine)

    def _watch(self, job: Job) -> dict[str, Any]:
        assert self._writer is not None
        outcome = sync_roots(
            job.paths,
            self.settings,
            self.engine,
            self._writer,
            status=self.status,
            cancel=job.cancel,
            publish_every_s=self.interval,
        )
        if outcome is None:
            return {"generation": self.engine.generation(), "folders": 0}
        return outcome.job_dict(self.engine)

    def _delete(self, job: Job) -> dict[str, Any]:
        assert self._writer is not None and job.doc_id is not None
        try:
            record, published = delete_and_publish(self.engine, self._writer, job.doc_id, status=self.status)
        except NotFoundError:
            with self.engine.reading():
                seen = self.engine.store.document(job.doc_id)
            if seen is None:
                raise
            # an earlier delete committed but its publish failed: searches still see it, so
            # this delete completes that one instead of answering 404
            record, published = seen, self._publish(hold=False, force=True)
        removed_file = self.on_deleted(record) if self.on_deleted is not None else False
        return {
            "deleted": True,
            "doc_id": record.doc_id,
            "source": record.source,
            "chunks": record.n_chunks,
            "removed_file": removed_file,
            "generation": self.engine.generation(),
            "locked_ms": round(published.locked_ms, 2) if published else 0.0,
        }

    def _publish_external(self) -> None:
        """Publish changes another process committed to the store (no-op when there are none)."""
        assert self._writer is not None
        try:
            if self._writer.generation() == self.engine.generation():
                return
            with contextlib.suppress(RagError):  # e.g. that process still holds the writer lock
                self._publish(hold=False, wait_s=0)
        except Exception:
            log.error("publishing external changes failed:\n%s", traceback.format_exc())


def _cancelled_error(message: str) -> dict[str, Any]:
    return {
        "type": "cancelled",
        "message": message,
        "hint": "what it committed is searchable; re-run the ingest to finish (the dense leg resumes where it stopped)",
    }
