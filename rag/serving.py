"""Consistency lives here: one engine shared by many readers, kept consistent while a writer ingests.

The HTTP server (:mod:`api`) and anything else that searches while it writes
(``rag ingest --watch``) use :class:`ServingEngine`; the transport only routes
requests to it. Writers go through :func:`ingest.publish.ingest_and_publish`
(or delete, then :meth:`ServingEngine.publish`), one thread at a time.

The problem. The server holds ONE :class:`~rag.engine.Engine` (the embedded
Qdrant store is single-process, so there cannot be two). Writers add, replace
and delete documents while readers search. The chunk store commits whole
documents, but the derived indexes (the legs) learn about a commit only when
they sync. A reader that mixes "store after the commit" with "legs before the
sync" sees half-written state: a replaced document's old chunk ids are still in
the legs but gone from the store, so the document silently drops out of the
results until the legs catch up.

The design: every reader sees one published state, and a new state is prepared
off to the side and swapped in at once.

* A published state is (a chunk-store connection pinned to one WAL snapshot,
  legs synced to exactly that snapshot). :class:`SnapshotStore` opens a read
  transaction and keeps it open, so every read on that connection (leg sync,
  chunk lookup of a hit, the document list) sees the same committed
  generation, whatever the ingest commits meanwhile on its own connection.
  SQLite in WAL mode lets this reader and the writer work at the same time.
* :meth:`ServingEngine.publish` (called only by the single writer thread, e.g.
  the server's job thread) pins a new snapshot and brings the legs to it:

  - the sparse (BMX) leg copy-on-write: a second copy is loaded from disk
    (30 ms at 10k chunks), synced to the new snapshot and saved, all outside
    any lock; readers keep using the old copy. The sync costs 0.3-0.9 s at
    10k chunks (tokenizing, then an fsynced save), too long to make readers
    wait for;
  - then, under the *write* side of a readers-writer lock, the store and sparse
    leg are swapped. Searches take the *read* side, so they wait only for this
    short swap and never see a mix.
  - search first, dense later: the dense leg cannot be copied (one handle on the
    exclusive vector store) and embedding is the slow part (minutes for a few
    hundred chunks on 2 CPU cores), so it is not waited for. After the swap the
    writer embeds the new chunks in small batches beside the searches; each
    batch is committed to the embedding cache and upserted under the write
    lock, so a search sees whole batches. Until it finishes the dense leg
    covers part of the snapshot, and hybrid search leaves the chunks it has no
    vector for to the other legs (:func:`rag.retrieval.legs.fill_uncovered`);
    ``/health`` and search say how much it covers. A publish cut short (the
    server stops) resumes where it stopped: the cache holds every batch done.
  - any other leg (the entity graph) syncs in place, so it too syncs under the
    write lock; every leg's ``prepare(store)`` (:class:`~rag.retrieval.legs.Leg`)
    is called first, outside the lock, for its slow part. The graph leg's ``prepare`` extracts
    the entities of the new chunks, so under the lock it only writes them
    (measured in ``bench/results/api_load.md``).

* The lock prefers writers (a steady stream of searches cannot starve a
  publish) and lets a thread that already holds it read again (a graph or
  answer helper that searches inside a locked section does not deadlock).

A long ingest publishes what it has committed every
``settings.api.publish_interval_s``, so new documents become searchable in
steps, each step consistent. The cost of pinning: while a snapshot is pinned
SQLite cannot recycle the WAL past it, so the WAL grows during an ingest and
shrinks again after the next publish.

SQLite connections: ``ChunkStore`` opens its connection with
``check_same_thread=False`` and SQLite is built serialized
(``sqlite3.threadsafety == 3``), so reader threads may share the pinned
connection; only reads ever run on it. Writes go through the writer thread's
own connection: sharing one connection would let a reader see the writer's
uncommitted transaction.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.engine import Engine, Published, add_phases
from rag.errors import StoreError
from rag.retrieval.legs import DenseLeg, Leg, ProgressFn, SyncResult
from rag.retrieval.search import Hit, Mode
from rag.settings import Settings
from rag.store import ChunkStore, StoreWriter

if TYPE_CHECKING:
    from rag.embed import Embedder

__all__ = ["COPY_ON_WRITE", "Published", "RWLock", "ServingEngine", "SnapshotStore"]

#: Legs that are rebuilt beside the live copy and swapped in (their on-disk index can be opened twice).
COPY_ON_WRITE = frozenset({"sparse"})
#: Legs that catch up after the swap, beside the searches (slow to build, partial coverage is usable).
DENSE_LATER = frozenset({"dense"})


class RWLock:
    """A readers-writer lock: many readers or one writer; waiting writers go first.

    A thread may take ``read`` again while it holds ``read`` or ``write``.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._writers_waiting = 0
        self._local = threading.local()

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        depth: int = getattr(self._local, "depth", 0)
        me = threading.get_ident()
        if depth == 0 and self._writer != me:
            with self._cond:
                while self._writer is not None or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1
            counted = True
        else:
            counted = False
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if counted:
                with self._cond:
                    self._readers -= 1
                    if not self._readers:
                        self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer is not None or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = threading.get_ident()
        try:
            yield
        finally:
            with self._cond:
                self._writer = None
                self._cond.notify_all()


class SnapshotStore(ChunkStore):
    """A read-only :class:`ChunkStore` whose every read comes from one committed snapshot."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, create=False)
        try:
            self._db.execute("BEGIN")
            row = self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        except Exception:
            super().close()
            raise
        self._generation = int(row[0])

    def generation(self) -> int:
        return self._generation

    @contextlib.contextmanager
    def transaction(self) -> Iterator[StoreWriter]:
        raise StoreError("a snapshot of the chunk store is read-only")
        yield  # pragma: no cover

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._db.execute("ROLLBACK")
        super().close()

    @contextlib.contextmanager
    def unpinned(self) -> Iterator[None]:
        """Let go of the snapshot for a moment (no read may run meanwhile) and pin it again;
        the caller makes sure nothing is committed in between (it holds the writer lock)."""
        self._db.execute("ROLLBACK")
        try:
            yield
        finally:
            self._db.execute("BEGIN")
            row = self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
            if int(row[0]) != self._generation:
                raise StoreError("the chunk store changed while its snapshot was released")


class ServingWriter(ChunkStore):
    """The writer's connection beside a :class:`ServingEngine`.

    Removing text asks for the write-ahead log to be truncated (so old page images leave the
    disk); with the engine's snapshot pinned that would wait (2 s) and fail every time. So the
    request is remembered and carried out by :meth:`ServingEngine.truncate_wal` after the next
    publish, while searches are held for the few milliseconds it takes."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, create=True)
        self.truncate_pending = False

    def truncate_wal(self) -> bool:
        self.truncate_pending = True
        return False

    def truncate_now(self) -> bool:
        self.truncate_pending = False
        return super().truncate_wal()


class ServingEngine(Engine):
    """The server's engine: searches under the read lock, state replaced by :meth:`publish`."""

    def __init__(self, settings: Settings, store: ChunkStore, *, embedder: Embedder | None = None) -> None:
        super().__init__(settings, store, embedder=embedder)
        self.lock = RWLock()
        self.last_publish: Published | None = None
        self.publishes = 0

    @classmethod
    def open_serving(cls, settings: Settings, *, embedder: Embedder | None = None) -> ServingEngine:
        """Open (creating an empty index if there is none) with every configured leg loaded now,
        so no request ever opens one (two requests opening the vector store would collide)."""
        ChunkStore(settings.data_dir, create=True).close()
        engine = cls(settings, SnapshotStore(settings.data_dir), embedder=embedder)
        try:
            for name in engine.available_legs():
                engine.leg(name)
        except BaseException:
            engine.close()
            raise
        return engine

    # -- readers -----------------------------------------------------------------------------------

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """Hold the published state still (for reads of ``store`` outside :meth:`search`)."""
        return self.lock.read()

    def search(self, query: str, k: int = 10, mode: Mode = "hybrid") -> list[Hit]:
        with self.lock.read():
            return super().search(query, k, mode)

    def status(self) -> dict[str, Any]:
        with self.lock.read():
            out = super().status()
            for name, leg in self._legs.items():
                out["legs"].setdefault(name, {})["generation"] = leg.generation
        return out

    def generation(self) -> int:
        return self.store.generation()

    def behind(self) -> bool:
        """Whether a loaded leg reflects another generation than the pinned snapshot."""
        gen = self.store.generation()
        return any(leg.generation != gen for leg in self._legs.values())

    # -- the writer ---------------------------------------------------------------------------------

    def truncate_wal(self, writer: ServingWriter) -> bool:
        """Carry out the writer's pending WAL truncation: the snapshot is released for it under the
        write lock (searches wait), then pinned again. Call it holding the data dir's writer lock."""
        if not writer.truncate_pending:
            return True
        store = self.store
        assert isinstance(store, SnapshotStore)
        with self.lock.write(), store.unpinned():
            return writer.truncate_now()

    def _sync_beside(self, leg: Leg, store: ChunkStore, progress: ProgressFn | None) -> SyncResult:
        """Sync ``leg`` to the published ``store`` while searches go on: its writes take the write
        lock batch by batch (a leg without that ability syncs under the lock at once)."""
        if isinstance(leg, DenseLeg):
            return leg.sync(store, progress, guard=self.lock.write)
        with self.lock.write():
            return leg.sync(store, progress)

    def publish(self, *, force: bool = False, progress: ProgressFn | None = None) -> Published | None:
        """Make the latest committed state of the chunk store the one every search sees.

        Only one thread may call this (the writer thread), holding the data dir's writer
        lock. None when nothing changed. The store and the BMX leg are swapped in first; the
        dense leg then embeds what is new beside the searches, reporting to ``progress``
        (``embed``, ``vectors``), which may raise to stop it (what is embedded is kept).
        """
        t0 = time.perf_counter()
        new = SnapshotStore(self.settings.data_dir)
        previous = self.store.generation()
        if new.generation() == previous and not force and not self.behind():
            new.close()
            return None
        fresh: dict[str, Leg] = {}
        phases: dict[str, float] = {}
        swapped = False
        later = {name: leg for name, leg in self._legs.items() if name in DENSE_LATER}
        try:
            for name in self._legs:
                if name in COPY_ON_WRITE:
                    leg = self._make_leg(name)
                    fresh[name] = leg
                    add_phases(phases, leg.sync(new), name)
            for name, leg in self._legs.items():
                if name not in fresh and name not in later:
                    t = time.perf_counter()
                    leg.prepare(new)
                    add_phases(phases, SyncResult(0, 0, time.perf_counter() - t), name)
            with self.lock.write():
                t_lock = time.perf_counter()
                for name, leg in self._legs.items():
                    if name not in fresh and name not in later:
                        add_phases(phases, leg.sync(new), name)
                old_store, self.store = self.store, new
                old_legs = {name: self._legs[name] for name in fresh}
                self._legs.update(fresh)
                swapped = True
                locked_ms = (time.perf_counter() - t_lock) * 1000
            old_store.close()
            for leg in old_legs.values():
                leg.close()
        finally:
            if not swapped:
                new.close()
                for leg in fresh.values():
                    leg.close()
        for name, leg in later.items():  # searchable already; the dense leg catches up beside the searches
            add_phases(phases, self._sync_beside(leg, new, progress), name)
        result = Published(new.generation(), previous, time.perf_counter() - t0, locked_ms, phases)
        self.last_publish = result
        self.publishes += 1
        return result
