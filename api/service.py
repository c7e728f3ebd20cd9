"""What the routes share: the engine, the writer thread, the LLM, and typed dependencies for them.

The engine is opened when the app starts. If that fails (no usable index, the
vector store held by another process, a missing package), the server still
starts: ``/health`` answers 503 with the reason and every route that needs the
engine answers 503 with the same error, and opening is retried (at most every
:data:`RETRY_S` seconds) when a request comes.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from api.uploads import clear_partials, remove_upload, uploads_dir
from ingest.jobs import JobRunner
from rag.errors import RagError
from rag.llm import LLM, make_llm
from rag.serving import ServingEngine
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.embed import Embedder

log = logging.getLogger("rag.api")
RETRY_S = 5.0


class Service:
    def __init__(
        self, settings: Settings, *, embedder: Embedder | None = None, watch: list[Path] | None = None
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.watch = [Path(p).expanduser().resolve() for p in watch or []]
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.uploads = uploads_dir(settings.data_dir)
        self.started_at = time.time()
        self.llm: LLM | None = None
        self.error: RagError | None = None
        self._engine: ServingEngine | None = None
        self._jobs: JobRunner | None = None
        self._open_lock = threading.Lock()
        self._next_try = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.llm = make_llm(self.settings.llm)
        self._try_open()

    def _try_open(self) -> None:
        with self._open_lock:
            if self._engine is not None or time.monotonic() < self._next_try:
                return
            try:
                engine = ServingEngine.open_serving(self.settings, embedder=self.embedder)
            except RagError as exc:
                self.error = exc
                self._next_try = time.monotonic() + RETRY_S
                log.warning("cannot open the index: %s", exc.one_line())
                return
            clear_partials(self.uploads)
            jobs = JobRunner(
                engine,
                self.settings,
                watch=self.watch,
                on_deleted=lambda record: remove_upload(self.uploads, record.path),
            )
            jobs.start()
            self._engine, self._jobs, self.error = engine, jobs, None
            if self.watch:
                self._start_watching(jobs)

    def _start_watching(self, jobs: JobRunner) -> None:
        """Sync the watched folders now (they may have changed while no server ran), then on
        every debounced batch of changes (see :mod:`ingest.watch`)."""
        from ingest.watch import FolderWatcher, watch_loop

        watcher = FolderWatcher(self.watch, debounce_ms=self.settings.ingest.watch_debounce_ms)
        jobs.submit_watch({str(p): p.name for p in self.watch})

        def on_batch(changed: dict[str, str]) -> None:
            jobs.status.mark_pending(changed)
            jobs.submit_watch(changed)

        self._watcher = threading.Thread(
            target=watch_loop, args=(watcher, self._watch_stop, on_batch), name="rag-watch", daemon=True
        )
        self._watcher.start()

    def stop(self) -> None:
        """Stop the writer thread and close everything; never raises (a failure to close one
        part is logged in one line and the rest is still closed)."""
        self._watch_stop.set()
        if self._watcher is not None:
            self._watcher.join(5.0)
        jobs, engine = self._jobs, self._engine
        self._jobs = self._engine = None
        if jobs is not None and not _quietly("stopping the writer thread", jobs.stop, default=False):
            log.warning("a write job was still running at shutdown; the store keeps what it committed")
            engine = None  # the writer thread may still use it
        if engine is not None:
            _quietly("closing the index", engine.close)
        if self.llm is not None:
            _quietly("closing the model client", self.llm.close)

    # -- access ------------------------------------------------------------------------------------

    def current_engine(self) -> ServingEngine | None:
        return self._engine

    def engine(self) -> ServingEngine:
        if self._engine is None:
            self._try_open()
        if self._engine is None:
            assert self.error is not None
            raise self.error.with_traceback(None)
        return self._engine

    def jobs(self) -> JobRunner:
        self.engine()
        assert self._jobs is not None
        return self._jobs

    @property
    def ready(self) -> bool:
        return self._engine is not None


def _quietly(what: str, fn: Any, default: Any = None) -> Any:
    try:
        return fn()
    except Exception as exc:
        reason = exc.one_line() if isinstance(exc, RagError) else f"{type(exc).__name__}: {exc}"
        log.error("%s failed: %s", what, reason)
        return default


async def get_service(request: Request) -> Service:
    service = request.app.state.service
    assert isinstance(service, Service)
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_engine(service: ServiceDep) -> ServingEngine:
    """The engine; opening it again (when it failed at start) blocks, so that runs in a worker thread."""
    engine = service.current_engine()
    if engine is not None:
        return engine
    return await run_in_threadpool(service.engine)


EngineDep = Annotated[ServingEngine, Depends(get_engine)]
