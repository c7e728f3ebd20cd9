"""Moved: the published-state model (pinned snapshot, copy-on-write BMX, readers-writer lock)
lives in the core, :mod:`rag.serving`; the API only routes requests to it. Kept for imports."""

from rag.serving import COPY_ON_WRITE, Published, RWLock, ServingEngine, SnapshotStore

__all__ = ["COPY_ON_WRITE", "Published", "RWLock", "ServingEngine", "SnapshotStore"]
