"""Find the files to ingest under a folder: include/exclude globs, hidden entries skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

from rag.settings import IngestSettings

SUPPORTED_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".pdf": "pdf"}


@dataclass(frozen=True, slots=True)
class FoundFile:
    path: Path  # absolute
    root: Path  # the folder the walk started from (absolute)
    source: str  # path relative to root, with forward slashes


def _excluded(rel: str, patterns: list[str]) -> bool:
    """True when ``rel`` (posix, relative) or any of its parent folders matches an exclude glob."""
    if not patterns:
        return False
    parts = PurePosixPath(rel).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        bare = pat.rstrip("/").removesuffix("/**")
        for cand in candidates:
            if fnmatch(cand, pat) or fnmatch(cand, bare) or fnmatch(PurePosixPath(cand).name, bare):
                return True
    return False


def _included(rel: str, patterns: list[str]) -> bool:
    """Include globs match the file name or the relative path, case-insensitively (``NOTES.MD`` is markdown)."""
    rel = rel.lower()
    name = PurePosixPath(rel).name
    return any(fnmatch(name, p.lower()) or fnmatch(rel, p.lower()) for p in patterns)


def walk(root: Path, settings: IngestSettings) -> Iterator[FoundFile]:
    """Supported files under ``root``, sorted by relative path. Symlinked folders are not followed."""
    return iter(sorted(_walk(root.resolve(), settings), key=lambda f: f.source))


def _walk(root: Path, settings: IngestSettings) -> Iterator[FoundFile]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        reldir = os.path.relpath(dirpath, root)
        reldir = "" if reldir == "." else reldir.replace(os.sep, "/")
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not (settings.skip_hidden and d.startswith("."))
            and not _excluded(f"{reldir}/{d}" if reldir else d, settings.exclude)
        )
        for name in sorted(filenames):
            if settings.skip_hidden and name.startswith("."):
                continue
            rel = f"{reldir}/{name}" if reldir else name
            if PurePosixPath(name).suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            if not _included(rel, settings.include) or _excluded(rel, settings.exclude):
                continue
            yield FoundFile(path=Path(dirpath, name), root=root, source=rel)
