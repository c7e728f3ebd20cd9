"""Uploaded files: safe names, atomic saves under ``<data_dir>/uploads/``.

A client names the file; the server decides where it goes. :func:`safe_filename`
keeps only the last path component of the client's name (either separator), so
``../../etc/passwd.md``, ``C:\\x\\a.md`` and ``/abs/a.md`` all land *inside* the
uploads folder; it drops control characters and leading dots (no hidden files,
no ``..``) and bounds the length. Files are first written to temporary files
(:func:`stage_upload`) and renamed into place only when the whole request is
in (:func:`place_upload`): a rejected request leaves nothing, and the ingest
worker never reads a half-written file, even when the same name is uploaded
again while an earlier copy is being ingested.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import BinaryIO

from ingest.walk import SUPPORTED_SUFFIXES
from rag.errors import FileTooLargeError, InputError, UnsupportedFileError

UPLOADS = "uploads"
MAX_NAME_BYTES = 200
_FORBIDDEN = set('<>:"|?*')


def uploads_dir(data_dir: Path) -> Path:
    return Path(data_dir) / UPLOADS


def safe_filename(name: str) -> str:
    """A file name that cannot leave the folder it is joined to (see the module docstring).

    Raises InputError when nothing usable is left, UnsupportedFileError for a type
    that ingest does not read.
    """
    base = re.split(r"[\\/]", name or "")[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(
        "_" if ch in _FORBIDDEN else ch
        for ch in base
        if ch.isprintable() and unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp")
    )
    base = " ".join(base.split()).lstrip(". ")
    stem, dot, suffix = base.rpartition(".")
    if not dot or not stem.strip(". "):
        raise InputError(
            f"unusable file name {name!r}", hint="name the file like notes.md, a.txt or paper.pdf"
        )
    if f".{suffix.lower()}" not in SUPPORTED_SUFFIXES:
        raise UnsupportedFileError(
            f"unsupported file type .{suffix} ({base})",
            hint="supported: " + " ".join(sorted(SUPPORTED_SUFFIXES)),
        )
    while len(base.encode("utf-8")) > MAX_NAME_BYTES:
        stem = stem[:-1]
        base = f"{stem}.{suffix}"
    return base


def target_path(folder: Path, name: str) -> Path:
    """``folder / name``, checked to be directly inside ``folder``."""
    folder = folder.resolve()
    path = (folder / name).resolve()
    if path.parent != folder:
        raise InputError(f"unusable file name {name!r}")
    return path


def stage_upload(src: BinaryIO, folder: Path, *, limit: int, max_mb: float) -> tuple[Path, int]:
    """Copy ``src`` to a temporary file in ``folder``; at most ``limit`` bytes (what is left of the
    request's ``max_mb``), else FileTooLargeError and nothing is left behind. Returns the
    temporary path and the number of bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while block := src.read(1 << 20):
                written += len(block)
                if written > limit:
                    raise FileTooLargeError(
                        f"the upload is larger than the {max_mb:g} MiB limit",
                        hint="raise RAG_API__MAX_UPLOAD_MB or upload fewer/smaller files per request",
                    )
                out.write(block)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp, written


def place_upload(tmp: Path, folder: Path, name: str) -> Path:
    """Move a staged file to ``folder/name`` in one rename (replacing an earlier upload of that name)."""
    dest = target_path(folder, name)
    os.replace(tmp, dest)
    return dest


def remove_upload(folder: Path, path: str) -> bool:
    """Delete ``path`` when it is a file directly inside ``folder`` (an upload); False otherwise."""
    p = Path(path)
    try:
        if p.parent.resolve() != folder.resolve():
            return False
        p.unlink()
        return True
    except OSError:
        return False


def clear_partials(folder: Path) -> None:
    """Remove temporary files left by saves that a crash interrupted."""
    if folder.is_dir():
        for child in folder.glob(".upload-*.part"):
            with contextlib.suppress(OSError):
                child.unlink()
