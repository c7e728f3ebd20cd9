"""Opening an embedded vector store that another process holds writes nothing to it.

The damage this guards against: ``EdgeShard.load`` repaired the segments (replaying and
deleting ``tracker_journal.dat``) before it noticed the shard's lock, so a `rag search` beside
`rag serve` left the server's shard unable to flush ("tracker journal ... is shorter than
expected") and every later delete failed.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rag.errors import StoreLockedError

pytest.importorskip("qdrant_edge")

from rag.vectors.edge import EdgeVectorStore

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from rag.vectors.edge import EdgeVectorStore
    store = EdgeVectorStore(Path(sys.argv[1]), "c", 8)
    rng = np.random.default_rng(0)
    store.upsert([f"id{i}" for i in range(200)], rng.random((200, 8)).astype("float32") + 0.1)
    store.delete([f"id{i}" for i in range(5)])
    store.flush()
    print("ready", flush=True)
    sys.stdin.readline()  # the test opens the store meanwhile
    store.delete([f"id{i}" for i in range(5, 50)])
    store.upsert(["x"], np.ones((1, 8), dtype="float32"))
    store.flush()
    print("count", store.count(), flush=True)
    store.close()
    """
)


def _files(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(".lock"):
                continue
            st = os.stat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


def test_a_second_process_cannot_damage_the_holders_shard(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        before = _files(tmp_path / "c")
        assert any(name.endswith("tracker_journal.dat") for name in before)
        for _ in range(3):
            with pytest.raises(StoreLockedError, match="open in another process"):
                EdgeVectorStore(tmp_path, "c", 8)
        assert _files(tmp_path / "c") == before  # nothing read-repaired, replayed or deleted
        out, err = proc.communicate("go\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "count 151" in out  # the holder's next writes and flush still work
    with EdgeVectorStore(tmp_path, "c", 8) as store:  # and once it is gone the shard opens whole
        assert store.count() == 151


def test_a_held_wal_lock_is_respected_before_loading(tmp_path: Path) -> None:
    with EdgeVectorStore(tmp_path, "c", 4) as store:
        store.upsert(["a"], np.ones((1, 4), dtype="float32"))
    before = _files(tmp_path / "c")
    fd = os.open(tmp_path / "c" / "wal", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a process holding the shard does
        with pytest.raises(StoreLockedError):
            EdgeVectorStore(tmp_path, "c", 4)
        assert _files(tmp_path / "c") == before
    finally:
        os.close(fd)
    with EdgeVectorStore(tmp_path, "c", 4) as store:
        assert store.count() == 1


def test_one_process_cannot_open_a_shard_twice(tmp_path: Path) -> None:
    with EdgeVectorStore(tmp_path, "c", 4), pytest.raises(StoreLockedError):
        EdgeVectorStore(tmp_path, "c", 4)
    with EdgeVectorStore(tmp_path, "c", 4) as again:  # the lock goes with close()
        assert again.count() == 0
