"""The per-user model cache: converted weights live once per machine, shared by every data dir.

``RAG_MODEL_DIR`` names the folder; without it, ``$XDG_CACHE_HOME/rag-notes/models``
or ``~/.cache/rag-notes/models``. Nothing model-sized is ever written into a
data dir.

A model folder is prepared with :func:`prepare_dir`: the first process to need
it takes an exclusive lock on ``<folder>.lock``, builds the folder under a
temporary name next to it and renames it into place, so a reader never sees a
half-written folder and concurrent processes convert once (the others wait for
the lock, then find the folder current).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from rag.errors import StoreError

__all__ = ["MODEL_DIR_ENV", "model_cache_dir", "prepare_dir"]

MODEL_DIR_ENV = "RAG_MODEL_DIR"


def model_cache_dir() -> Path:
    """Where converted model weights are kept: ``RAG_MODEL_DIR``, else the user's cache folder."""
    explicit = os.environ.get(MODEL_DIR_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rag-notes" / "models"


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock_path`` (blocking; released on exit or process death)."""
    with open(lock_path, "a+b") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: the atomic rename alone still keeps readers safe
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def prepare_dir(out_dir: Path, is_current: Callable[[Path], bool], build: Callable[[Path], None]) -> bool:
    """Make sure ``out_dir`` holds a current model folder; returns True when it had to be built.

    ``is_current(folder)`` says whether a folder is complete and up to date;
    ``build(tmp)`` writes a fresh one into the empty folder ``tmp``. The build
    runs under an exclusive lock and its result is renamed into place, so
    concurrent callers build once and readers never see a partial folder.
    """
    out_dir = Path(out_dir)
    if is_current(out_dir):
        return False
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        lock = out_dir.parent / f".{out_dir.name}.lock"
    except OSError as exc:
        raise StoreError(
            f"cannot create the model cache {out_dir.parent}: {exc}",
            hint=f"set {MODEL_DIR_ENV} to a writable folder",
        ) from exc
    with _exclusive(lock):
        if is_current(out_dir):  # another process built it while this one waited
            return False
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp.", dir=out_dir.parent))
        old: Path | None = None
        try:
            build(tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; other users of a shared cache read it too
            if out_dir.exists():  # stale: move it aside first (a directory rename cannot replace a full one)
                old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
                os.replace(out_dir, old / "model")
            os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    return True
