"""Moved: the writer thread and its jobs live in :mod:`ingest.jobs`. Kept for imports."""

from ingest.jobs import Job, JobRunner

__all__ = ["Job", "JobRunner"]
