"""The chunk store: one SQLite file, the source of truth for documents and chunks.

Every index (sparse, dense, graph) is derived from it and can be rebuilt from
it. Writes happen in transactions that hold whole documents, so a crash (even
``kill -9``) leaves each document either fully old or fully new; SQLite's WAL
journal makes committed transactions survive a process crash.

A ``generation`` counter in ``meta`` goes up with every committed change, so a
derived index can tell cheaply whether it is in step with the store.

Only one writer at a time: :meth:`ChunkStore.writer_lock` takes an exclusive
``flock`` on ``<data_dir>/.write.lock``. Readers never block (WAL snapshots).

Deleted text must not linger: notes carry pasted credentials, and a document
re-processed by a better redactor must lose what the old one missed. So the
connection runs with ``secure_delete`` (freed cells and pages are zeroed, not
left in free space) and :meth:`ChunkStore.truncate_wal` empties the
write-ahead log, which otherwise keeps old page images until overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import StoreError, StoreLockedError
from rag.models import Chunk

SCHEMA_VERSION = 3  # v2: per-document redactor and repair versions; v3: chunk context
DB_NAME = "chunks.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id       TEXT PRIMARY KEY,
    path         TEXT NOT NULL UNIQUE,   -- absolute path of the file
    root         TEXT NOT NULL,          -- folder it was ingested from
    source       TEXT NOT NULL,          -- path relative to root (what users see)
    format       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    content_hash TEXT NOT NULL,          -- sha256 of the file bytes
    pipeline     TEXT NOT NULL,          -- fingerprint of extraction/chunking settings
    n_pages      INTEGER,
    n_chunks     INTEGER NOT NULL,
    encoding     TEXT,
    notes        TEXT NOT NULL,          -- JSON list of strings
    redactions   TEXT NOT NULL,          -- JSON object kind -> count
    text         TEXT NOT NULL,          -- extracted (repaired, redacted) text, offsets point here
    ingested_at  REAL NOT NULL,
    redactor_version INTEGER NOT NULL DEFAULT 0,  -- secret redactor that cleaned text (0: none/unknown)
    repair_version   INTEGER NOT NULL DEFAULT 0   -- encoding repair that produced text (0: unknown)
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id     TEXT PRIMARY KEY,
    doc_id       TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal      INTEGER NOT NULL,
    start        INTEGER NOT NULL,
    end          INTEGER NOT NULL,
    page         INTEGER,
    heading      TEXT NOT NULL,          -- JSON list of heading texts
    text         TEXT NOT NULL,
    context      TEXT NOT NULL DEFAULT ''  -- indexed with the chunk, not part of its text
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id, ordinal);
"""


@dataclass(slots=True)
class DocumentRecord:
    """One ingested file, as the manifest knows it."""

    doc_id: str
    path: str
    root: str
    source: str
    format: str
    size: int
    mtime_ns: int
    content_hash: str
    pipeline: str
    n_pages: int | None
    n_chunks: int
    encoding: str | None = None
    notes: list[str] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)
    ingested_at: float = 0.0
    # Versions of the redactor and the encoding repair that produced the stored text; an ingest
    # re-processes a document whose versions are older than the running code's (0 = unknown,
    # e.g. a document stored before versions were recorded).
    redactor_version: int = 0
    repair_version: int = 0

    @classmethod
    def for_text(
        cls, *, doc_id: str, root: str, source: str, text: str, format: str, pipeline: str, n_chunks: int
    ) -> DocumentRecord:
        """The record of a text that did not come from a file on disk (an eval corpus entry, a
        generated note): path ``root/source``, no mtime, content hash of ``text``."""
        return cls(
            doc_id=doc_id,
            path=f"{root}/{source}",
            root=root,
            source=source,
            format=format,
            size=len(text),
            mtime_ns=0,
            content_hash=hashlib.sha256(text.encode()).hexdigest(),
            pipeline=pipeline,
            n_pages=None,
            n_chunks=n_chunks,
        )

    def listing(self) -> dict[str, Any]:
        """The row `rag documents --json` and ``GET /v1/documents`` show for this file."""
        return {
            "doc_id": self.doc_id,
            "source": self.source,
            "path": self.path,
            "format": self.format,
            "pages": self.n_pages,
            "chunks": self.n_chunks,
            "encoding": self.encoding,
            "notes": self.notes,
            "ingested_at": self.ingested_at,
            "redactor_version": self.redactor_version,
            "repair_version": self.repair_version,
        }


_DOC_COLUMNS = (
    "doc_id, path, root, source, format, size, mtime_ns, content_hash, pipeline, "
    "n_pages, n_chunks, encoding, notes, redactions, ingested_at, redactor_version, repair_version"
)


def _doc_from_row(row: sqlite3.Row | tuple) -> DocumentRecord:
    (doc_id, path, root, source, fmt, size, mtime_ns, content_hash, pipeline, n_pages, n_chunks, enc) = row[
        :12
    ]
    return DocumentRecord(
        doc_id=doc_id,
        path=path,
        root=root,
        source=source,
        format=fmt,
        size=size,
        mtime_ns=mtime_ns,
        content_hash=content_hash,
        pipeline=pipeline,
        n_pages=n_pages,
        n_chunks=n_chunks,
        encoding=enc,
        notes=json.loads(row[12]),
        redactions=json.loads(row[13]),
        ingested_at=row[14],
        redactor_version=row[15],
        repair_version=row[16],
    )


_CHUNK_COLUMNS = (
    "c.chunk_id, c.doc_id, d.source, c.ordinal, c.text, c.start, c.end, c.page, c.heading, c.context"
)


def _chunk_from_row(row: tuple) -> Chunk:
    return Chunk(
        chunk_id=row[0],
        doc_id=row[1],
        source=row[2],
        ordinal=row[3],
        text=row[4],
        start=row[5],
        end=row[6],
        page=row[7],
        heading_path=tuple(json.loads(row[8])),
        context=row[9],
    )


class ChunkStore:
    """SQLite-backed manifest + chunks. Use as a context manager or call :meth:`close`."""

    def __init__(self, data_dir: Path, *, create: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        if not self.path.exists() and not create:
            raise StoreError(
                f"no index in {self.data_dir}",
                hint="run `rag ingest FOLDER` first or pass the right --data-dir",
            )
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA secure_delete=ON")  # deleted text is zeroed, not left in free pages
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open chunk store {self.path}: {exc}", hint="move the data dir away and re-ingest"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot create data dir {self.data_dir}: {exc.strerror}") from None
        self._lock_fd: int | None = None

    def _init_schema(self) -> None:
        with contextlib.suppress(sqlite3.DatabaseError, ValueError):  # no meta table yet: create it below
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is not None and int(row[0]) == SCHEMA_VERSION:
                return  # current: opening writes nothing (a reader beside the process that owns the dir)
        self._db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS)
        with self._tx():
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                self._db.execute("INSERT INTO meta VALUES ('generation', '0')")
            elif int(row[0]) in (1, 2):
                if int(row[0]) == 1:
                    self._migrate_v1()
                self._migrate_v2()
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"chunk store schema v{row[0]} is not supported (expected v{SCHEMA_VERSION})",
                    hint="re-ingest into a new --data-dir",
                )

    def _migrate_v1(self) -> None:
        """v1 -> v2: add the version columns. Existing documents get version 0 (unknown), so the next
        ingest re-processes them with the current redactor and repair."""
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(documents)")}
        for col in ("redactor_version", "repair_version"):
            if col not in cols:
                self._db.execute(f"ALTER TABLE documents ADD COLUMN {col} INTEGER NOT NULL DEFAULT 0")

    def _migrate_v2(self) -> None:
        """v2 -> v3: chunks gain ``context`` (empty for existing chunks). Their documents were made by
        an older pipeline (its fingerprint says so), so the next ingest re-processes them and their
        chunks gain their context then."""
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(chunks)")}
        if "context" not in cols:
            self._db.execute("ALTER TABLE chunks ADD COLUMN context TEXT NOT NULL DEFAULT ''")
        self._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    def truncate_wal(self) -> bool:
        """Copy the write-ahead log into the database and truncate it to zero bytes, so the page
        images of deleted rows it still holds are gone from disk. False when a reader's open
        snapshot kept the log from being emptied (its frames are then overwritten later)."""
        self._db.execute("PRAGMA busy_timeout=2000")  # a reader holding the log back wins, soon
        try:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self._db.execute("PRAGMA busy_timeout=30000")
        return not busy

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        self.release_writer_lock()
        self._db.close()

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def acquire_writer_lock(self) -> None:
        """Exclusive writer lock on the data dir (non-blocking)."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.data_dir / ".write.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(f"data dir {self.data_dir} is being written by another process") from None
        self._lock_fd = fd

    def release_writer_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[StoreWriter]:
        """All writes go through here; they become visible (and durable) together."""
        with self._tx() as db:
            writer = StoreWriter(db)
            yield writer
            if writer.changed:
                db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")

    # -- reads -------------------------------------------------------------------------------------

    def generation(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def documents(self, *, under: str | None = None) -> list[DocumentRecord]:
        sql = f"SELECT {_DOC_COLUMNS} FROM documents"
        args: tuple = ()
        if under is not None:
            prefix = under.rstrip(os.sep) + os.sep
            sql += " WHERE substr(path, 1, ?) = ?"
            args = (len(prefix), prefix)
        return [_doc_from_row(r) for r in self._db.execute(sql + " ORDER BY source", args)]

    def document(self, doc_id: str) -> DocumentRecord | None:
        row = self._db.execute(f"SELECT {_DOC_COLUMNS} FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        return _doc_from_row(row) if row else None

    def document_by_path(self, path: str) -> DocumentRecord | None:
        row = self._db.execute(f"SELECT {_DOC_COLUMNS} FROM documents WHERE path=?", (path,)).fetchone()
        return _doc_from_row(row) if row else None

    def document_text(self, doc_id: str) -> str | None:
        row = self._db.execute("SELECT text FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        return row[0] if row else None

    def count_documents(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def count_chunks(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def chunk_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT chunk_id FROM chunks")}

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        sql = f"SELECT {_CHUNK_COLUMNS} FROM chunks c JOIN documents d USING(doc_id) WHERE c.doc_id=? ORDER BY c.ordinal"
        return [_chunk_from_row(r) for r in self._db.execute(sql, (doc_id,))]

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        """Chunks for ``chunk_ids`` in the given order; unknown ids are skipped."""
        found: dict[str, Chunk] = {}
        for i in range(0, len(chunk_ids), 500):
            part = list(chunk_ids[i : i + 500])
            marks = ",".join("?" * len(part))
            sql = f"SELECT {_CHUNK_COLUMNS} FROM chunks c JOIN documents d USING(doc_id) WHERE c.chunk_id IN ({marks})"
            for row in self._db.execute(sql, part):
                found[row[0]] = _chunk_from_row(row)
        return [found[c] for c in chunk_ids if c in found]

    def iter_chunks(self, *, batch_size: int = 2000) -> Iterator[list[Chunk]]:
        """All chunks in (doc, ordinal) order, in batches; one read snapshot."""
        cur = self._db.execute(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks c JOIN documents d USING(doc_id) ORDER BY c.doc_id, c.ordinal"
        )
        while rows := cur.fetchmany(batch_size):
            yield [_chunk_from_row(r) for r in rows]


class StoreWriter:
    """Write operations, valid only inside :meth:`ChunkStore.transaction`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.changed = False

    def put_document(self, doc: DocumentRecord, text: str, chunks: Iterable[Chunk]) -> None:
        """Insert or replace a document and all of its chunks."""
        self.delete_document(doc.doc_id)
        self._db.execute(
            f"INSERT INTO documents ({_DOC_COLUMNS}, text) VALUES ({','.join('?' * 18)})",
            (
                doc.doc_id,
                doc.path,
                doc.root,
                doc.source,
                doc.format,
                doc.size,
                doc.mtime_ns,
                doc.content_hash,
                doc.pipeline,
                doc.n_pages,
                doc.n_chunks,
                doc.encoding,
                json.dumps(doc.notes, ensure_ascii=False),
                json.dumps(doc.redactions, sort_keys=True),
                doc.ingested_at or time.time(),
                doc.redactor_version,
                doc.repair_version,
                text,
            ),
        )
        self._db.executemany(
            "INSERT INTO chunks (chunk_id, doc_id, ordinal, start, end, page, heading, text, context)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    c.chunk_id,
                    doc.doc_id,
                    c.ordinal,
                    c.start,
                    c.end,
                    c.page,
                    json.dumps(list(c.heading_path), ensure_ascii=False),
                    c.text,
                    c.context,
                )
                for c in chunks
            ],
        )
        self.changed = True

    def delete_document(self, doc_id: str) -> bool:
        cur = self._db.execute("DELETE FROM documents WHERE doc_id=?", (doc_id,))
        if cur.rowcount:
            self.changed = True
        return cur.rowcount > 0

    def touch(self, doc_id: str, *, size: int, mtime_ns: int, root: str, source: str) -> None:
        """Record a new mtime (and where it was seen from) for an unchanged document."""
        self._db.execute(
            "UPDATE documents SET size=?, mtime_ns=?, root=?, source=? WHERE doc_id=?",
            (size, mtime_ns, root, source, doc_id),
        )
