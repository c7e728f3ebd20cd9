"""Live folder sync: watch folders with ``watchfiles`` and keep the index in step.

:class:`FolderWatcher` turns file-system events (inotify on Linux, through the
Rust ``notify`` crate) into debounced batches of changed paths. Each batch
ends in one :func:`sync_roots`, which syncs the *watched folders* with the one
ingest-and-publish path (:func:`ingest.publish.ingest_and_publish`). Syncing
the folders rather than replaying events one by one is what makes every kind
of change come out right, whatever order the events arrive in:

* new, changed and deleted files; a file renamed or moved inside a watched
  folder (the old path is deleted, the new one added; unchanged bytes are not
  re-embedded: the embedding cache is keyed by text);
* an editor's atomic save (write ``.name.swp`` or ``name.tmp``, rename it over
  ``name``): the temporary file never matches the include globs, the rename
  makes ``name`` change;
* a burst (1,000 files copied in): debouncing gathers it into a few batches;
* a folder deleted whole (its files leave the walk), even a watched folder
  itself (its documents are removed; watching resumes if it comes back).

The cost of a batch is one walk of the watched folders with a ``stat`` per file
(unchanged files are skipped on size and mtime) plus the work on what changed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath

from ingest.publish import IngestOutcome, ingest_and_publish, publish
from ingest.walk import SUPPORTED_SUFFIXES
from rag.engine import Engine
from rag.filestatus import FileStatusBook
from rag.settings import Settings
from rag.store import ChunkStore

log = logging.getLogger("rag.watch")

#: Longest time changes are gathered into one batch (a batch also ends 50 ms after the last event).
DEBOUNCE_MS = 300
#: How often the watcher checks its stop event and whether a watched folder vanished or came back.
TICK_MS = 500

IGNORED_SUFFIXES = (".swp", ".swx", ".swo", ".tmp", ".part", ".crdownload", "~")


def relevant(path: str, roots: Sequence[Path] = ()) -> bool:
    """Whether a change at ``path`` can change the index: a supported file, or a folder (a
    path without a suffix), outside hidden folders (below the watched folder it is in: a watched
    folder may itself sit in a hidden one); editors' temporary files are not."""
    rel = PurePosixPath(path.replace(os.sep, "/"))
    for root in roots:
        base = PurePosixPath(str(root).replace(os.sep, "/"))
        if rel == base or base in rel.parents:
            rel = rel.relative_to(base)
            break
    parts = [p for p in rel.parts if p not in ("/", ".", "..")]
    if any(p.startswith(".") for p in parts[:-1]) or (parts and parts[-1].startswith(".")):
        return False
    name = parts[-1] if parts else ""
    if name.endswith(IGNORED_SUFFIXES) or name == "4913":  # vim probes with a file named 4913
        return False
    suffix = PurePosixPath(name).suffix.lower()
    return suffix in SUPPORTED_SUFFIXES or suffix == ""


class FolderWatcher:
    """Debounced batches of changed paths under ``roots`` (absolute), as ``{path: source}``."""

    def __init__(self, roots: Sequence[Path], *, debounce_ms: int = DEBOUNCE_MS) -> None:
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        self.debounce_ms = debounce_ms

    def source_of(self, path: Path) -> str:
        for root in self.roots:
            if path == root:
                return root.name
            if root in path.parents:
                return path.relative_to(root).as_posix()
        return path.name

    def batches(self, stop: threading.Event) -> Iterator[dict[str, str]]:
        """Until ``stop`` is set: each debounced batch of relevant changes. A watched folder that
        disappears (or comes back) is a change at that folder."""
        import watchfiles

        present = {r for r in self.roots if r.is_dir()}
        while not stop.is_set():
            if not present:
                if stop.wait(TICK_MS / 1000):
                    return
                now = {r for r in self.roots if r.is_dir()}
                if now:
                    yield {str(r): self.source_of(r) for r in now}
                present = now
                continue
            try:
                for events in watchfiles.watch(
                    *sorted(present),
                    watch_filter=lambda _change, p: relevant(p, self.roots),
                    debounce=self.debounce_ms,
                    step=50,
                    stop_event=stop,
                    rust_timeout=TICK_MS,
                    yield_on_timeout=True,
                    raise_interrupt=False,
                ):
                    now = {r for r in self.roots if r.is_dir()}
                    changed = {str(Path(p)): self.source_of(Path(p)) for _, p in events}
                    changed.update({str(r): self.source_of(r) for r in present ^ now})
                    if changed:
                        yield changed
                    if now != present:
                        present = now
                        break  # watch the folders that exist now
            except (FileNotFoundError, RuntimeError, OSError) as exc:  # a watched folder vanished
                log.info("watching restarts: %s", exc)
                present = {r for r in self.roots if r.is_dir()}


def sync_roots(
    roots: Sequence[Path],
    settings: Settings,
    engine: Engine,
    writer: ChunkStore,
    *,
    status: FileStatusBook | None = None,
    cancel: threading.Event | None = None,
    publish_every_s: float | None = None,
) -> IngestOutcome | None:
    """Sync the watched folders: the ones that exist are ingested (new, changed and deleted files);
    the documents of one that no longer exists are removed. None when no folder exists."""
    existing = [r for r in roots if r.is_dir()]
    gone = [r for r in roots if not r.is_dir()]
    if gone:
        _forget(gone, engine, writer, status)
    if not existing:
        return None
    return ingest_and_publish(
        existing,
        settings,
        engine,
        writer,
        status=status,
        cancel=cancel,
        publish_every_s=publish_every_s,
    )


def _forget(roots: Sequence[Path], engine: Engine, writer: ChunkStore, status: FileStatusBook | None) -> None:
    writer.acquire_writer_lock()
    try:
        doomed = [d for r in roots for d in writer.documents(under=str(r))]
        if doomed:
            with writer.transaction() as tx:
                for doc in doomed:
                    tx.delete_document(doc.doc_id)
            publish(engine, writer, hold=True)
    finally:
        writer.release_writer_lock()
    if status is not None:
        status.settle(roots, {}, {})


def watch_loop(
    watcher: FolderWatcher,
    stop: threading.Event,
    on_batch: Callable[[dict[str, str]], None],
) -> None:
    """Call ``on_batch`` for each batch until ``stop`` is set; an error in one batch is logged
    and watching goes on."""
    for batch in watcher.batches(stop):
        try:
            on_batch(batch)
        except Exception as exc:  # keep watching: the next change retries the sync
            log.error("syncing the watched folders failed: %s: %s", type(exc).__name__, exc)
