"""Vector stores: congruence of every backend with an exact numpy oracle and with each other.

The same seeded sequence of upserts, overwrites, deletes and searches runs on
each backend (edge, qdrant-client local mode on disk and in memory, and the
server adapter driven through a local-mode client). Below Qdrant's indexing
threshold every backend searches exactly, so results must equal the oracle's:
same ids (up to genuine score ties), scores within 1e-5.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from rag.errors import ConfigError, InputError, StoreError, StoreLockedError
from rag.vectors import (
    EdgeVectorStore,
    QdrantClientStore,
    VectorStore,
    open_local,
    open_server,
    open_vector_store,
)
from rag.vectors.base import TIE_SLACK, Hit, point_id

DIM = 16
TOL = 1e-5
KS = (1, 10, 50)
BACKENDS = ("edge", "local_path", "local_memory", "server")
PERSISTENT = ("edge", "local_path")
# qdrant-client local mode on disk commits (fsyncs) every point separately: its
# full scenario takes seconds, so it runs in the slow tier. The other backends
# share its code (QdrantClientStore), and its persistence and error paths keep
# fast tests of their own below.
SLOW = {"local_path"}


def _params(names: tuple[str, ...]) -> list[object]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


REPO = Path(__file__).resolve().parents[1]

Opener = Callable[[], VectorStore]


def _opener(backend: str, root: Path, dim: int = DIM) -> Opener:
    """A function that opens (or reopens) one backend's store under ``root``."""
    if backend == "edge":
        return lambda: open_vector_store("edge", path=root, url=None, collection="chunks", dim=dim)
    if backend == "local_path":
        return lambda: open_vector_store("local", path=root, url=None, collection="chunks", dim=dim)
    if backend == "local_memory":
        return lambda: open_vector_store("local", path=None, url=None, collection="chunks", dim=dim)
    if backend == "server":
        # The server adapter, with its HTTP client swapped for a local-mode one.
        from qdrant_client import QdrantClient

        return lambda: open_server(
            "http://qdrant.invalid:6333",
            "chunks",
            dim,
            shard_number=2,
            replication_factor=1,
            client=QdrantClient(location=":memory:"),
        )
    raise AssertionError(backend)


@pytest.fixture(params=_params(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(backend: str, tmp_path: Path) -> Iterator[Opener]:
    opened: list[VectorStore] = []
    inner = _opener(backend, tmp_path / backend)

    def open_() -> VectorStore:
        store = inner()
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


# -- the oracle -------------------------------------------------------------------


@dataclass
class Oracle:
    """Exact cosine search over a dict, in float64."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def upsert(self, ids: list[str], vectors: np.ndarray) -> None:
        for cid, vec in zip(ids, vectors, strict=True):
            self.vectors[cid] = vec.astype(np.float64) / np.linalg.norm(vec.astype(np.float64))

    def delete(self, ids: list[str]) -> None:
        for cid in ids:
            self.vectors.pop(cid, None)

    def scores(self, query: np.ndarray) -> dict[str, float]:
        q = query.astype(np.float64) / np.linalg.norm(query.astype(np.float64))
        return {cid: float(vec @ q) for cid, vec in self.vectors.items()}

    def search(self, query: np.ndarray, k: int) -> list[Hit]:
        return sorted(self.scores(query).items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def assert_same_hits(got: list[Hit], want: list[Hit], truth: dict[str, float]) -> None:
    """Same length and scores; an id may differ from the oracle's only inside a genuine tie."""
    assert len(got) == len(want), (got, want)
    assert len({cid for cid, _ in got}) == len(got), "duplicate ids in results"
    for rank, ((gid, gscore), (wid, wscore)) in enumerate(zip(got, want, strict=True)):
        assert gscore == pytest.approx(wscore, abs=TOL), (rank, got, want)
        if gid != wid:
            assert gid in truth, f"rank {rank}: unknown id {gid}"
            assert truth[gid] == pytest.approx(wscore, abs=TOL), (rank, gid, wid)


# -- the scenario -----------------------------------------------------------------


def _ids(rng: np.random.Generator, n: int) -> list[str]:
    return [f"{x:016x}" for x in rng.integers(0, 2**63, size=n, dtype=np.int64)]


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@dataclass
class Transcript:
    """Every search result and id set the scenario produced, in order."""

    searches: list[tuple[np.ndarray, int, list[Hit]]] = field(default_factory=list)
    id_sets: list[set[str]] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)


def run_scenario(store: VectorStore, oracle: Oracle, seed: int = 7) -> Transcript:
    """Seeded upserts, overwrites, deletes (some of unknown ids) and searches; checks against the oracle."""
    rng = np.random.default_rng(seed)
    out = Transcript()

    def apply_upsert(ids: list[str], vecs: np.ndarray) -> None:
        store.upsert(ids, vecs)
        oracle.upsert(ids, vecs)

    def apply_delete(ids: list[str]) -> None:
        store.delete(ids)
        oracle.delete(ids)

    def check() -> None:
        queries = np.vstack(
            [_unit(rng, 6), np.stack([oracle.vectors[c] for c in sorted(oracle.vectors)[:2]])]
        )
        for k in KS:
            for q in queries:
                got = store.search(q, k)
                assert_same_hits(got, oracle.search(q, k), oracle.scores(q))
                out.searches.append((q, k, got))
            batch = store.search_many(queries, k)
            assert len(batch) == len(queries)
            for q, got in zip(queries, batch, strict=True):
                assert_same_hits(got, oracle.search(q, k), oracle.scores(q))
        ids = store.ids()
        assert ids == set(oracle.vectors)
        assert store.count() == len(oracle.vectors)
        out.id_sets.append(ids)
        out.counts.append(store.count())

    first = _ids(rng, 80)
    apply_upsert(first, _unit(rng, 80))
    check()
    # Overwrite a quarter of them with new vectors.
    apply_upsert(first[:20], _unit(rng, 20))
    check()
    # Delete some, plus ids that never existed.
    apply_delete(first[20:35] + _ids(rng, 3))
    check()
    # New ids with an in-batch duplicate (the last one wins) and exact duplicate vectors (ties by id).
    fresh = _ids(rng, 20)
    vecs = _unit(rng, 20)
    vecs[1:6] = vecs[0]
    apply_upsert([*fresh, fresh[3]], np.vstack([vecs, vecs[:1]]))
    check()
    # Delete everything, then write again (the store must come back from empty).
    apply_delete(sorted(oracle.vectors))
    assert store.count() == 0
    assert store.search(_unit(rng, 1)[0], 10) == []
    apply_upsert(first[:60], _unit(rng, 60))
    check()
    return out


# -- congruence -------------------------------------------------------------------


@dataclass
class Run:
    root: Path
    transcript: Transcript | None = None
    error: BaseException | None = None


class Runs:
    """The scenario run once per backend, on first use, shared by the tests below."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.done: dict[str, Run] = {}

    def __getitem__(self, name: str) -> Run:
        if name not in self.done:
            run = Run(self.factory.mktemp(name))
            store = _opener(name, run.root)()
            try:
                run.transcript = run_scenario(store, Oracle())
            except Exception as exc:  # re-raised by test_backend_matches_oracle[name]
                run.error = exc
            finally:
                store.close()
            self.done[name] = run
        return self.done[name]

    def transcript(self, name: str) -> Transcript:
        transcript = self[name].transcript
        assert transcript is not None, f"the scenario failed on {name}: see test_backend_matches_oracle"
        return transcript


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory)


def test_backend_matches_oracle(backend: str, runs: Runs) -> None:
    error = runs[backend].error
    if error is not None:
        raise error
    assert runs[backend].transcript is not None


@pytest.mark.parametrize("other", _params(BACKENDS[1:]))
def test_backends_agree(other: str, runs: Runs) -> None:
    """Each backend's transcript equals edge's: same id sets and counts, ids exact up to near-ties."""
    reference, transcript = runs.transcript(BACKENDS[0]), runs.transcript(other)
    assert transcript.id_sets == reference.id_sets
    assert transcript.counts == reference.counts
    assert len(transcript.searches) == len(reference.searches)
    for (q1, k1, hits1), (q2, k2, hits2) in zip(reference.searches, transcript.searches, strict=True):
        assert k1 == k2
        np.testing.assert_array_equal(q1, q2)
        ids1, ids2 = [h[0] for h in hits1], [h[0] for h in hits2]
        scores1, scores2 = np.array([h[1] for h in hits1]), np.array([h[1] for h in hits2])
        np.testing.assert_allclose(scores2, scores1, atol=TOL, rtol=0)
        if ids1 != ids2:  # allowed only where neighbouring scores are closer than TOL
            gaps = np.abs(np.diff(scores1))
            bad = [i for i, (a, b) in enumerate(zip(ids1, ids2, strict=True)) if a != b]
            assert all((i > 0 and gaps[i - 1] < TOL) or (i < len(gaps) and gaps[i] < TOL) for i in bad), (
                ids1,
                ids2,
            )


def test_duplicate_vectors_tie_break_by_id(open_store: Opener) -> None:
    """30 equal vectors: more than the candidates first fetched, still ordered by id."""
    store = open_store()
    rng = np.random.default_rng(3)
    vec = _unit(rng, 1)[0]
    ids = [f"dup-{i:02d}" for i in range(30)]
    store.upsert(ids[::-1], np.tile(vec, (30, 1)))
    store.upsert(_ids(rng, 50), _unit(rng, 50))
    for hits in (store.search(vec, 10), store.search_many(vec[None, :], 10)[0]):
        assert [cid for cid, _ in hits] == ids[:10]
        assert all(score == pytest.approx(1.0, abs=TOL) for _, score in hits)


def test_server_adapter_passes_create_and_search_options() -> None:
    """shard_number/replication_factor reach create_collection; hnsw_ef reaches every search."""
    from qdrant_client import QdrantClient

    calls: list[tuple[str, dict[str, object]]] = []

    class Recording(QdrantClient):
        def create_collection(self, *args: object, **kwargs: object) -> bool:  # type: ignore[override]
            calls.append(("create", kwargs))
            return super().create_collection(*args, **kwargs)  # type: ignore[arg-type]

        def query_points(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            calls.append(("query", kwargs))
            return super().query_points(*args, **kwargs)  # type: ignore[arg-type]

    store = open_server(
        "http://qdrant.invalid:6333",
        "chunks",
        DIM,
        shard_number=3,
        replication_factor=2,
        hnsw_ef=64,
        client=Recording(location=":memory:"),
    )
    try:
        store.upsert(["a"], _unit(np.random.default_rng(0), 1))
        with pytest.warns(UserWarning, match="exact"):  # local mode ignores search params, and says so
            store.search(_unit(np.random.default_rng(1), 1)[0], 100)
    finally:
        store.close()
    create = [kw for name, kw in calls if name == "create"]
    assert len(create) == 1
    assert create[0]["shard_number"] == 3 and create[0]["replication_factor"] == 2
    query = [kw for name, kw in calls if name == "query"]
    assert query[0]["search_params"].hnsw_ef == 100 + TIE_SLACK  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", _params(PERSISTENT))
def test_persistence_round_trip(backend: str, runs: Runs) -> None:
    """Close (done after the scenario), reopen: same ids, count and search results."""
    transcript = runs.transcript(backend)
    reopened = _opener(backend, runs[backend].root)()
    try:
        assert isinstance(reopened, VectorStore)
        assert reopened.ids() == transcript.id_sets[-1]
        assert reopened.count() == transcript.counts[-1]
        last_phase = transcript.searches[-len(KS) * 8 :]
        for q, k, hits in last_phase:
            again = reopened.search(q, k)
            assert [h[0] for h in again] == [h[0] for h in hits]
            np.testing.assert_allclose([h[1] for h in again], [h[1] for h in hits], atol=TOL, rtol=0)
        reopened.close()
        reopened.close()  # idempotent
    finally:
        reopened.close()


def test_local_path_small_round_trip(tmp_path: Path) -> None:
    """The fast-tier persistence check for qdrant-client local mode on disk."""
    rng = np.random.default_rng(5)
    ids, vecs = _ids(rng, 12), _unit(rng, 12)
    store = open_local(tmp_path, "chunks", DIM)
    store.upsert(ids, vecs)
    store.delete(ids[:2])
    store.upsert(ids[2:3], vecs[3:4])  # overwrite
    before = store.search_many(vecs[:4], 5)
    store.close()
    again = open_local(tmp_path, "chunks", DIM)
    try:
        assert again.ids() == set(ids[2:])
        for hits, want in zip(again.search_many(vecs[:4], 5), before, strict=True):
            assert [h[0] for h in hits] == [h[0] for h in want]
            np.testing.assert_allclose([h[1] for h in hits], [h[1] for h in want], atol=TOL, rtol=0)
        # ids[2] was overwritten with ids[3]'s vector: an exact tie, ordered by id.
        assert again.search(vecs[3], 2) == [(cid, 1.0) for cid in sorted(ids[2:4])]
    finally:
        again.close()


@pytest.mark.parametrize("backend", PERSISTENT)
def test_dimension_mismatch_on_reopen(backend: str, tmp_path: Path) -> None:
    store = _opener(backend, tmp_path / backend)()
    store.upsert(["a"], _unit(np.random.default_rng(0), 1))
    store.close()
    with pytest.raises(StoreError) as err:
        _opener(backend, tmp_path / backend, dim=DIM * 2)()
    assert "re-index" in err.value.one_line()
    assert f"{DIM}-d" in str(err.value)
    # The store is still usable with the right dimension.
    again = _opener(backend, tmp_path / backend)()
    assert again.ids() == {"a"}
    again.close()


def test_dimension_mismatch_on_server_collection() -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    first = QdrantClientStore(client, "chunks", DIM, where="test")
    first.upsert(["a"], _unit(np.random.default_rng(0), 1))
    with pytest.raises(StoreError) as err:
        QdrantClientStore(client, "chunks", DIM + 1, where="test")
    assert "re-index" in err.value.one_line()
    first.close()


def test_edge_second_writer_is_locked_out(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path, "chunks", DIM)
    try:
        with pytest.raises(StoreLockedError):
            EdgeVectorStore(tmp_path, "chunks", DIM)
    finally:
        store.close()


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_local_second_writer_is_locked_out(tmp_path: Path) -> None:
    store = open_local(tmp_path, "chunks", DIM)
    try:
        with pytest.raises(StoreLockedError):
            open_local(tmp_path, "chunks", DIM)
    finally:
        store.close()


# -- inputs -----------------------------------------------------------------------


def test_bad_inputs_are_input_errors(open_store: Opener) -> None:
    store = open_store()
    rng = np.random.default_rng(1)
    with pytest.raises(InputError):
        store.upsert(["a", "b"], _unit(rng, 3))
    with pytest.raises(InputError):
        store.upsert(["a"], _unit(rng, 1, dim=DIM + 1))
    with pytest.raises(InputError):
        store.upsert(["a"], np.full((1, DIM), np.nan, dtype=np.float32))
    with pytest.raises(InputError):
        store.upsert(["a"], np.zeros((1, DIM), dtype=np.float32))
    with pytest.raises(InputError):
        store.upsert([""], _unit(rng, 1))
    with pytest.raises(InputError):
        store.search(_unit(rng, 1)[0], 0)
    with pytest.raises(InputError):
        store.search(_unit(rng, 2), 3)
    assert store.count() == 0
    # Empty operations are no-ops; unknown deletes are ignored.
    store.upsert([], np.empty((0, DIM), dtype=np.float32))
    store.delete([])
    store.delete(["never-stored"])
    assert store.search(_unit(rng, 1)[0], 5) == []
    assert store.search_many(np.empty((0, DIM), dtype=np.float32), 5) == []
    assert store.ids() == set()
    # float64 and (1, dim) inputs are accepted.
    store.upsert(["x"], _unit(rng, 1).astype(np.float64))
    assert store.search(_unit(rng, 1), 1)[0][0] == "x"


def test_closed_store_raises(open_store: Opener) -> None:
    store = open_store()
    store.close()
    with pytest.raises(StoreError):
        store.count()


def test_open_vector_store_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        open_vector_store("edge", path=None, url=None, collection="c", dim=DIM)
    with pytest.raises(ConfigError):
        open_vector_store("server", path=None, url=None, collection="c", dim=DIM)
    with pytest.raises(StoreError):
        open_vector_store("edge", path=tmp_path, url=None, collection="../escape", dim=DIM)


def test_server_unreachable_is_backend_error() -> None:
    from rag.errors import BackendError

    # Port 9 (discard) on localhost: nothing listens, the connection is refused at once.
    with pytest.raises(BackendError, match="cannot reach Qdrant"):
        open_vector_store("server", path=None, url="http://127.0.0.1:9", collection="c", dim=DIM)


def test_point_ids_are_stable_uuids() -> None:
    assert point_id("0123456789abcdef") == point_id("0123456789abcdef")
    assert point_id("a") != point_id("b")
    assert len(point_id("任何 id")) == 36


def test_point_id_is_uuid5_of_the_namespace() -> None:
    import uuid

    from rag.vectors.base import POINT_ID_NAMESPACE

    rng = np.random.default_rng(5)
    ids = ["", "a", "0123456789abcdef", "任何 id", "notes/001/000123.md#7", "é\u0301", "\U0001f600" * 40]
    ids += [rng.bytes(int(n)).hex() for n in rng.integers(1, 64, 200)]
    for cid in ids:
        assert point_id(cid) == str(uuid.uuid5(POINT_ID_NAMESPACE, cid))


def test_as_vectors_gives_what_numpy_gives() -> None:
    from rag.vectors.base import as_vectors

    rng = np.random.default_rng(6)
    f32 = rng.standard_normal((30, 17)).astype(np.float32)
    f64 = rng.standard_normal((30, 17))  # not float32 values: rounded as numpy rounds them
    for rows in (f32, f64):
        records = [(f"c{i}", row.tolist()) for i, row in enumerate(rows)]
        got = as_vectors(records)
        assert list(got) == [cid for cid, _ in records]
        for cid, vec in records:
            want = np.asarray(vec, dtype=np.float32)
            assert got[cid].dtype == np.float32 and got[cid].shape == want.shape
            assert np.array_equal(got[cid], want) and got[cid].flags.writeable
    # other shapes of vector fall back to numpy
    assert as_vectors([("e", [])])["e"].shape == (0,)
    assert np.array_equal(as_vectors([("t", (1.0, 2.0))])["t"], np.array([1.0, 2.0], dtype=np.float32))


# -- HNSW path and crash safety (edge) ---------------------------------------------


def test_edge_hnsw_recall_and_exact_scores(tmp_path: Path) -> None:
    """Past the indexing threshold edge searches an HNSW graph: near-exact recall, exact scores."""
    rng = np.random.default_rng(11)
    n = 2000
    ids, vecs = _ids(rng, n), _unit(rng, n)
    store = EdgeVectorStore(tmp_path, "chunks", DIM, indexing_threshold_kb=16)
    oracle = Oracle()
    store.upsert(ids, vecs)
    oracle.upsert(ids, vecs)
    assert store.optimize() is True
    info = store._shard.info()
    assert info.indexed_vectors_count == n
    recall = []
    for q in _unit(rng, 30):
        got = store.search(q, 10)
        truth = oracle.scores(q)
        for cid, score in got:
            assert score == pytest.approx(truth[cid], abs=TOL)
        recall.append(len({c for c, _ in got} & {c for c, _ in oracle.search(q, 10)}) / 10)
    assert np.mean(recall) >= 0.95
    store.close()


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from rag.vectors import EdgeVectorStore

    store = EdgeVectorStore(Path(sys.argv[1]), "chunks", int(sys.argv[2]))
    batch = int(sys.argv[3])
    for i in range(100_000):
        v = np.random.default_rng(i).normal(size=(batch, store.dim)).astype(np.float32)
        store.upsert([f"{i:06d}-{j:04d}" for j in range(batch)], v)
        print(i, flush=True)
    """
)


def _batch_ids(i: int, batch: int) -> set[str]:
    return {f"{i:06d}-{j:04d}" for j in range(batch)}


def test_edge_survives_kill_during_writes(tmp_path: Path) -> None:
    """kill -9 mid-write: on reopen the store holds exactly a prefix of the acknowledged batches."""
    batch = 200
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path), str(DIM), str(batch)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        acked = 0
        deadline = time.monotonic() + 60
        while acked < 5 and time.monotonic() < deadline:
            if proc.stdout.readline():
                acked += 1
        os.kill(proc.pid, signal.SIGKILL)
        acked += len(proc.stdout.read().split())
    assert acked >= 5, "the writer did not start"

    store = EdgeVectorStore(tmp_path, "chunks", DIM)
    try:
        count = store.count()
        assert count % batch == 0
        applied = count // batch
        assert applied in (acked, acked + 1)  # the batch in flight is all or nothing
        want: set[str] = set()
        for i in range(applied):
            want |= _batch_ids(i, batch)
        assert store.ids() == want
        last = np.random.default_rng(applied - 1).normal(size=(batch, DIM)).astype(np.float32)
        assert store.search(last[0], 1)[0][0] == f"{applied - 1:06d}-0000"
    finally:
        store.close()


_OPTIMIZER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from rag.vectors import EdgeVectorStore

    store = EdgeVectorStore(Path(sys.argv[1]), "chunks", 64, indexing_threshold_kb=64)
    rng = np.random.default_rng(0)
    n = 20_000
    store.upsert([f"c{i:06d}" for i in range(n)], rng.normal(size=(n, 64)).astype(np.float32))
    print("optimizing", flush=True)
    store.optimize()
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_edge_survives_kill_during_optimize(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", _OPTIMIZER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "optimizing"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        finished = "done" in proc.stdout.read()
    assert not finished, "optimize ended before the kill: the test needs more points"

    vecs = np.random.default_rng(0).normal(size=(20_000, 64)).astype(np.float32)
    store = EdgeVectorStore(tmp_path, "chunks", 64, indexing_threshold_kb=64)
    try:
        assert store.count() == 20_000
        assert len(store.ids()) == 20_000
        oracle = Oracle()
        oracle.upsert([f"c{i:06d}" for i in range(20_000)], vecs)
        q = vecs[123]
        assert store.search(q, 1)[0][0] == "c000123"
    finally:
        store.close()
