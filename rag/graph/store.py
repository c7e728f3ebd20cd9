"""The entity graph on disk: one SQLite file, ``<data_dir>/graph/graph.sqlite3``.

Tables::

    chunks    (id, chunk_id, llm)                 chunks the graph reflects; llm = 'ok' | 'failed' | NULL
    entities  (id, key, df)                       df = number of chunks that mention the entity
    mentions  (chunk, entity, tf, salient, surface, kind)
    edges     (a, b, weight)                      a < b; weight = chunks in which both are salient
    llm_cache (hash, entities)                    LLM extractions by text, kept across rebuilds
    meta      (key, value)                        fingerprint, generation

Everything but ``llm_cache`` is derived from per-chunk extractions, and every
write is the exact inverse of another: adding a chunk adds its mentions, one
to ``df`` of each entity it mentions and one to the weight of each pair of its
salient entities; removing it subtracts the same; entities and edges that reach
zero are deleted. So a graph kept up to date chunk by chunk is the same graph,
row for row, as one built from scratch (:meth:`GraphStore.snapshot` compares).
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rag.errors import StoreError
from rag.graph.extract import Mention

__all__ = ["GraphStore"]

DB_NAME = "graph.sqlite3"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id       INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL UNIQUE,
    llm      TEXT
);
CREATE TABLE IF NOT EXISTS entities (
    id  INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    df  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mentions (
    chunk   INTEGER NOT NULL,
    entity  INTEGER NOT NULL,
    tf      INTEGER NOT NULL,
    salient INTEGER NOT NULL,
    surface TEXT NOT NULL,
    kind    TEXT NOT NULL,
    PRIMARY KEY (chunk, entity)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mentions_by_entity ON mentions(entity, chunk);
CREATE TABLE IF NOT EXISTS edges (
    a      INTEGER NOT NULL,
    b      INTEGER NOT NULL,
    weight INTEGER NOT NULL,
    PRIMARY KEY (a, b)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_by_b ON edges(b, a);
CREATE TABLE IF NOT EXISTS llm_cache (hash TEXT PRIMARY KEY, entities TEXT NOT NULL);
"""

_DERIVED = ("chunks", "entities", "mentions", "edges")


def _batches(items: Sequence[Any], n: int = 500) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class GraphStore:
    """SQLite-backed entity graph. Writes go through :meth:`add` / :meth:`remove` inside :meth:`transaction`."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / DB_NAME
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA secure_delete=ON")  # removed chunks' surfaces are zeroed on disk
            self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB: edge upserts touch pages all over
            self._removed = False
            self._db.executescript(_SCHEMA)
            version = self.meta("schema_version")
            if version is None:
                self.set_meta("schema_version", SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                self.reset()
                self.set_meta("schema_version", SCHEMA_VERSION)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open the entity graph {self.path}: {exc}",
                hint="delete the graph folder; the next `rag ingest` rebuilds it",
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot create {self.dir}: {exc.strerror}") from None

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
            if self._removed:
                self._removed = False
                self._truncate_wal()

    def _truncate_wal(self) -> None:
        """Empty the write-ahead log after chunks were removed: its older frames still hold their
        mentions (a re-processed note's secret, say) until overwritten. A reader that keeps the log
        busy for more than a moment wins; the log is then emptied by a later removal."""
        self._db.execute("PRAGMA busy_timeout=2000")
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            self._db.execute("PRAGMA busy_timeout=30000")

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database file now, waiting for no reader (SQLite's
        PASSIVE checkpoint), so that the next commit does not stop to do it."""
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    # -- meta --------------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def reset(self) -> None:
        """Forget the derived graph (the LLM cache stays)."""
        with self.transaction():
            for table in _DERIVED:
                self._db.execute(f"DELETE FROM {table}")
            self._db.execute("DELETE FROM meta WHERE key IN ('generation', 'fingerprint')")

    # -- writes ------------------------------------------------------------------------------------

    def add(self, items: Sequence[tuple[str, Sequence[Mention], str | None]], max_salient: int) -> None:
        """Add chunks ``(chunk_id, mentions most salient first, llm status)``; call inside a transaction
        (the only writer then: new row ids are assigned here)."""
        db = self._db
        keys = sorted({m.key for _, ms, _ in items for m in ms})
        ids = self._entity_ids(keys)
        next_id = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM entities").fetchone()[0]) + 1
        new: dict[int, str] = {}
        for key in keys:
            if key not in ids:
                ids[key] = next_id
                new[next_id] = key
                next_id += 1
        cid = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0])
        df: Counter[int] = Counter()
        pairs: Counter[tuple[int, int]] = Counter()
        chunk_rows: list[tuple[int, str, str | None]] = []
        rows: list[tuple[int, int, int, int, str, str]] = []
        for chunk_id, mentions, llm in items:
            cid += 1
            chunk_rows.append((cid, chunk_id, llm))
            salient = sorted(ids[m.key] for m in mentions[:max_salient])
            pairs.update(itertools.combinations(salient, 2))
            top = set(salient)
            for m in mentions:
                eid = ids[m.key]
                df[eid] += 1
                rows.append((cid, eid, m.tf, int(eid in top), m.surface, m.kind))
        db.executemany("INSERT INTO chunks (id, chunk_id, llm) VALUES (?, ?, ?)", chunk_rows)
        db.executemany(
            "INSERT INTO entities (id, key, df) VALUES (?, ?, ?)", [(e, k, df[e]) for e, k in new.items()]
        )
        db.executemany(
            "UPDATE entities SET df = df + ? WHERE id = ?", [(n, e) for e, n in df.items() if e not in new]
        )
        db.executemany("INSERT INTO mentions VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.executemany(
            "INSERT INTO edges (a, b, weight) VALUES (?, ?, ?) "
            "ON CONFLICT(a, b) DO UPDATE SET weight = weight + excluded.weight",
            sorted((a, b, n) for (a, b), n in pairs.items()),
        )

    def remove(self, chunk_ids: Sequence[str]) -> int:
        """Remove chunks and everything they contributed; call inside a transaction. Returns how many."""
        db = self._db
        internal: list[int] = []
        for part in _batches(chunk_ids):
            marks = ",".join("?" * len(part))
            internal += [r[0] for r in db.execute(f"SELECT id FROM chunks WHERE chunk_id IN ({marks})", part)]
        if not internal:
            return 0
        self._removed = True
        df: Counter[int] = Counter()
        pairs: Counter[tuple[int, int]] = Counter()
        for part in _batches(internal):
            marks = ",".join("?" * len(part))
            per_chunk: dict[int, list[int]] = {}
            for chunk, entity, salient in db.execute(
                f"SELECT chunk, entity, salient FROM mentions WHERE chunk IN ({marks})", part
            ):
                df[entity] += 1
                if salient:
                    per_chunk.setdefault(chunk, []).append(entity)
            for ents in per_chunk.values():
                pairs.update(itertools.combinations(sorted(ents), 2))
            db.execute(f"DELETE FROM mentions WHERE chunk IN ({marks})", part)
            db.execute(f"DELETE FROM chunks WHERE id IN ({marks})", part)
        db.executemany("UPDATE entities SET df = df - ? WHERE id = ?", [(n, e) for e, n in df.items()])
        db.executemany(
            "UPDATE edges SET weight = weight - ? WHERE a = ? AND b = ?",
            [(n, a, b) for (a, b), n in pairs.items()],
        )
        db.executemany("DELETE FROM edges WHERE a = ? AND b = ? AND weight <= 0", list(pairs))
        db.executemany("DELETE FROM entities WHERE id = ? AND df <= 0", [(e,) for e in df])
        return len(internal)

    def _entity_ids(self, keys: Sequence[str]) -> dict[str, int]:
        ids: dict[str, int] = {}
        for part in _batches(keys):
            marks = ",".join("?" * len(part))
            ids.update(
                self._db.execute(f"SELECT key, id FROM entities WHERE key IN ({marks})", part).fetchall()
            )
        return ids

    # -- the LLM cache -----------------------------------------------------------------------------

    def cached_llm(self, digest: str) -> str | None:
        row = self._db.execute("SELECT entities FROM llm_cache WHERE hash=?", (digest,)).fetchone()
        return None if row is None else str(row[0])

    def cache_llm(self, digest: str, entities_json: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO llm_cache VALUES (?, ?)", (digest, entities_json))

    # -- reads -------------------------------------------------------------------------------------

    def chunk_ids(self, *, llm: str | None = None) -> set[str]:
        if llm is None:
            return {r[0] for r in self._db.execute("SELECT chunk_id FROM chunks")}
        return {r[0] for r in self._db.execute("SELECT chunk_id FROM chunks WHERE llm = ?", (llm,))}

    def count(self, table: str) -> int:
        if table not in _DERIVED:
            raise ValueError(table)
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def entities(self, keys: Iterable[str]) -> dict[str, tuple[int, int]]:
        """``{key: (id, df)}`` for the keys that are nodes."""
        out: dict[str, tuple[int, int]] = {}
        wanted = list(dict.fromkeys(keys))
        for part in _batches(wanted):
            marks = ",".join("?" * len(part))
            for key, eid, df in self._db.execute(
                f"SELECT key, id, df FROM entities WHERE key IN ({marks})", part
            ):
                out[key] = (eid, df)
        return out

    def postings(self, entity: int) -> list[tuple[str, int]]:
        """``[(chunk_id, tf)]`` of the chunks that mention ``entity``."""
        return self._db.execute(
            "SELECT c.chunk_id, m.tf FROM mentions m JOIN chunks c ON c.id = m.chunk WHERE m.entity = ?",
            (entity,),
        ).fetchall()

    def neighbours(self, entity: int) -> list[tuple[int, str, int, int]]:
        """``[(id, key, weight, df)]`` of the entities that share an edge with ``entity``."""
        sql = (
            "SELECT e.id, e.key, x.weight, e.df FROM "
            "(SELECT b AS n, weight FROM edges WHERE a = ? UNION ALL SELECT a AS n, weight FROM edges WHERE b = ?) x "
            "JOIN entities e ON e.id = x.n"
        )
        return self._db.execute(sql, (entity, entity)).fetchall()

    def surfaces(self, entity: int) -> Counter[str]:
        return Counter(
            dict(
                self._db.execute(
                    "SELECT surface, COUNT(*) FROM mentions WHERE entity = ? GROUP BY surface", (entity,)
                ).fetchall()
            )
        )

    def kinds(self, entity: int) -> Counter[str]:
        return Counter(
            dict(
                self._db.execute(
                    "SELECT kind, COUNT(*) FROM mentions WHERE entity = ? GROUP BY kind", (entity,)
                ).fetchall()
            )
        )

    def keys_like(self, fragment: str, limit: int = 5) -> list[str]:
        """Keys containing ``fragment``, most mentioned first (suggestions for an unknown name)."""
        pattern = "%" + fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._db.execute(
            "SELECT key FROM entities WHERE key LIKE ? ESCAPE '\\' ORDER BY df DESC, key LIMIT ?",
            (pattern, limit),
        )
        return [r[0] for r in rows]

    def iter_nodes(self) -> Iterator[tuple[int, str, int, str, str]]:
        """``(id, key, df, name, kind)`` for every entity: name and kind are the most frequent
        surface and kind over its mentions (ties: the smallest)."""
        best_surface: dict[int, tuple[int, str]] = {}
        for eid, surface, n in self._db.execute(
            "SELECT entity, surface, COUNT(*) FROM mentions GROUP BY entity, surface"
        ):
            old = best_surface.get(eid)
            if old is None or (-n, surface) < (-old[0], old[1]):
                best_surface[eid] = (n, surface)
        best_kind: dict[int, tuple[int, str]] = {}
        for eid, kind, n in self._db.execute(
            "SELECT entity, kind, COUNT(*) FROM mentions GROUP BY entity, kind"
        ):
            old = best_kind.get(eid)
            if old is None or (-n, kind) < (-old[0], old[1]):
                best_kind[eid] = (n, kind)
        for eid, key, df in self._db.execute("SELECT id, key, df FROM entities ORDER BY key"):
            yield eid, key, df, best_surface.get(eid, (0, key))[1], best_kind.get(eid, (0, "term"))[1]

    def iter_edges(self, min_weight: int = 1) -> Iterator[tuple[int, int, int]]:
        yield from self._db.execute(
            "SELECT a, b, weight FROM edges WHERE weight >= ? ORDER BY a, b", (min_weight,)
        )

    def snapshot(self) -> dict[str, Any]:
        """The graph by keys and chunk ids (no internal ids): equal for equal graphs."""
        key = dict(self._db.execute("SELECT id, key FROM entities").fetchall())
        return {
            "entities": dict(self._db.execute("SELECT key, df FROM entities").fetchall()),
            "mentions": {
                (cid, key[e]): (tf, sal, surface, kind)
                for cid, e, tf, sal, surface, kind in self._db.execute(
                    "SELECT c.chunk_id, m.entity, m.tf, m.salient, m.surface, m.kind "
                    "FROM mentions m JOIN chunks c ON c.id = m.chunk"
                )
            },
            "edges": {
                tuple(sorted((key[a], key[b]))): w
                for a, b, w in self._db.execute("SELECT a, b, weight FROM edges")
            },
            "chunks": self.chunk_ids(),
        }
