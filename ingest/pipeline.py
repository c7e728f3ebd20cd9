"""Folder sync: files -> extracted text -> redacted -> chunks -> chunk store.

``sync_paths`` walks the given files and folders, and for each file decides
from the manifest (path, size, mtime, content hash, pipeline fingerprint)
whether it is new, changed or unchanged; files that disappeared from a walked
folder are deleted. Each document is written whole inside a store transaction,
so an interrupted run followed by a re-run ends in the same state as one
uninterrupted run. Bad files never stop the run: they are reported in
``failed`` and any stale chunks of theirs are removed.

Each document records the versions of the secret redactor and the encoding
repair that produced its text. An index built before the redactor improved
still holds what the old one missed, so a document whose versions are older
than the running code's is re-processed even when its bytes did not change;
the chunk store then empties its write-ahead log so the replaced text is gone
from disk, not only from the tables. (Chunks whose text did not change keep
their embeddings: the embedding cache is keyed by chunk text.)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest import encoding as _encoding
from ingest import secrets as _secrets
from ingest.chunking import TableHeaders, chunk_markdown, chunk_plain, document_title
from ingest.encoding import decode_bytes
from ingest.pdf import extract_pdf
from ingest.secrets import redact
from ingest.walk import SUPPORTED_SUFFIXES, FoundFile, walk
from rag.errors import DocumentError, FileTooLargeError, InputError, UnsupportedFileError
from rag.models import Chunk, DocFormat, ExtractedDocument, PageSpan
from rag.settings import ChunkingSettings, IngestSettings, Settings
from rag.store import ChunkStore, DocumentRecord, StoreWriter

# Bump when extraction or chunking changes in a way that should re-process unchanged files.
# 2: chunks carry their context (title, running header, table column headers).
EXTRACTOR_VERSION = 2

CONTEXT_MAX_CHARS = 300  # a chunk's context is cut to this, at a word boundary
CONTEXT_SEPARATOR = " | "

ProgressFn = Callable[[int, int, str], None]
PARALLEL_MIN_JOBS = 16  # below 2x this many files, worker start-up costs more than it saves


def _hash(*parts: str | bytes, size: int = 8) -> str:
    h = hashlib.blake2b(digest_size=size)
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()


def doc_id_for(path: Path) -> str:
    """Stable id of a document: a hash of its absolute path."""
    return _hash(str(path))


def redactor_version() -> int:
    """Version of the secret redactor's rules (read at call time, so a test can patch it)."""
    return _secrets.REDACTOR_VERSION


def repair_version() -> int:
    """Version of the encoding detection and mojibake repair (read at call time, so a test can patch it)."""
    return _encoding.REPAIR_VERSION


def versions_for(settings: IngestSettings, fmt: str) -> tuple[int, int]:
    """``(redactor, repair)`` versions a document of format ``fmt`` gets now: 0 for a step that did not
    run on it (no redaction with ``redact_secrets`` off; PDFs are not decoded by the repair)."""
    return (redactor_version() if settings.redact_secrets else 0, 0 if fmt == "pdf" else repair_version())


def is_outdated(record: DocumentRecord, settings: IngestSettings) -> bool:
    """Whether ``record``'s text came from an older redactor or repair than the running code's."""
    redactor, repair = versions_for(settings, record.format)
    return record.redactor_version < redactor or record.repair_version < repair


def pipeline_fingerprint(settings: Settings) -> str:
    """Everything that changes the chunks of an unchanged file."""
    return json.dumps(
        {
            "v": EXTRACTOR_VERSION,
            "chunk": [settings.chunking.size, settings.chunking.overlap],
            "context": settings.chunking.context,
            "redact": settings.ingest.redact_secrets,
            "pdf": settings.ingest.pdf_mode,
        },
        sort_keys=True,
    )


# -- pure steps ------------------------------------------------------------------------------------


def extract(data: bytes, fmt: DocFormat, settings: IngestSettings, *, name: str = "") -> ExtractedDocument:
    """Bytes of one file -> text (decoded, repaired, secrets redacted when enabled)."""
    if fmt == "pdf":
        doc = extract_pdf(data, mode=settings.pdf_mode, name=name)
    else:
        decoded = decode_bytes(data, name=name)
        doc = ExtractedDocument(
            text=decoded.text, format=fmt, encoding=decoded.encoding, notes=list(decoded.notes)
        )
    if settings.redact_secrets:
        doc = redact_document(doc)
    return doc


def redact_document(doc: ExtractedDocument) -> ExtractedDocument:
    """Redact secrets page by page so page spans stay exact."""
    counts: dict[str, int] = {}

    def _redact(part: str) -> str:
        out, found = redact(part)
        for kind, n in found.items():
            counts[kind] = counts.get(kind, 0) + n
        return out

    if not doc.pages:
        text, pages = _redact(doc.text), None
    else:
        pieces: list[str] = []
        pages = []
        pos = prev_end = 0
        for span in doc.pages:
            pieces.append(doc.text[prev_end : span.start])  # separator between pages, unchanged
            pos += span.start - prev_end
            page_text = _redact(doc.text[span.start : span.end])
            pieces.append(page_text)
            pages.append(PageSpan(span.page, pos, pos + len(page_text)))
            pos += len(page_text)
            prev_end = span.end
        pieces.append(doc.text[prev_end:])
        text = "".join(pieces)
    notes = list(doc.notes)
    title = _redact_quietly(doc.title) if doc.title else doc.title
    headers = {page: tuple(_redact_quietly(h) for h in lines) for page, lines in doc.running_headers.items()}
    if counts:
        total = sum(counts.values())
        notes.append(
            f"redacted {total} secret(s): " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        )
    return ExtractedDocument(
        text=text,
        format=doc.format,
        pages=pages,
        encoding=doc.encoding,
        notes=notes,
        redactions=counts,
        title=title,
        running_headers=headers,
    )


def _redact_quietly(text: str) -> str:
    """Redacted ``text``, not counted: a title or a header is a copy of text that is counted."""
    return redact(text)[0]


def chunk_document(
    doc: ExtractedDocument, *, doc_id: str, source: str, chunking: ChunkingSettings
) -> list[Chunk]:
    """Cut an extracted document into chunks with page numbers, offsets, heading paths and context.

    With ``chunking.context``, each chunk's ``context`` (:func:`chunk_context`) is made of the
    document's title (the extraction's, else :func:`~ingest.chunking.document_title`, else the
    file's name), the running headers of its page, and the header row of the table it starts
    inside; its text and offsets are the same either way."""
    breaks = [p.start for p in doc.pages[1:]] if doc.pages else []
    splitter = chunk_plain if doc.format == "text" else chunk_markdown
    spans = splitter(doc.text, size=chunking.size, overlap=chunking.overlap, hard_breaks=breaks)
    title = None
    if chunking.context:  # a PDF's title comes from its extraction (metadata, cover), not its first heading
        title = doc.title or (None if doc.format == "pdf" else document_title(doc.text, doc.format))
        title = title or _file_title(source)
    tables = TableHeaders(doc.text) if chunking.context else None
    chunks = []
    for i, span in enumerate(spans):
        text = doc.text[span.start : span.end]
        page = doc.page_at(span.start)
        context = ""
        if chunking.context:
            items = [
                title,
                *doc.running_headers.get(page or 0, ()),
                tables.at(span.start) if tables else None,
            ]
            context = chunk_context(items, span.heading_path, text)
        # the context is part of the id: a chunk whose context changed is indexed again
        id_parts = (doc_id, str(span.start), str(span.end), text, *((context,) if context else ()))
        chunks.append(
            Chunk(
                chunk_id=_hash(*id_parts),
                doc_id=doc_id,
                source=source,
                ordinal=i,
                text=text,
                start=span.start,
                end=span.end,
                page=page,
                heading_path=span.heading_path,
                context=context,
            )
        )
    return chunks


_WORD_RE = re.compile(
    r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"
)


def _words(text: str) -> set[str]:
    return set(_WORD_RE.findall(text.casefold()))


def chunk_context(items: Sequence[str | None], heading_path: Sequence[str], text: str) -> str:
    """The context a chunk is indexed with: ``items`` in order (title, running headers, table header
    row), each kept only when it brings a word that the heading path, the chunk's text and the items
    kept before it do not already have; at most :data:`CONTEXT_MAX_CHARS`, cut at a word boundary."""
    known = _words(" ".join(heading_path))
    text_words: set[str] | None = None
    kept: list[str] = []
    size = 0
    for raw in items:
        item = " ".join((raw or "").split())
        if not item:
            continue
        words = _words(item)
        if not words or words <= known:
            continue
        if text_words is None:
            text_words = _words(text)
        if words <= known | text_words:
            continue
        room = CONTEXT_MAX_CHARS - size - (len(CONTEXT_SEPARATOR) if kept else 0)
        if room <= 0:
            break
        if len(item) > room:
            cut = item.rfind(" ", 0, room + 1)
            item = item[: cut if cut > 0 else room].rstrip()
            if not item:
                break
        kept.append(item)
        known |= words
        size += len(item) + (len(CONTEXT_SEPARATOR) if len(kept) > 1 else 0)
    return CONTEXT_SEPARATOR.join(kept)


def _file_title(source: str) -> str | None:
    """A file's name as its title (``docker-gpu_notes.md`` -> ``docker gpu notes``); None for a
    source without a file suffix (an eval corpus entry) or a name without letters."""
    name = Path(source).name
    stem, suffix = os.path.splitext(name)
    if not suffix or suffix.lower() not in SUPPORTED_SUFFIXES:
        return None
    title = " ".join(stem.replace("_", " ").replace("-", " ").split())
    return title if sum(ch.isalpha() for ch in title) >= 2 else None


# -- the sync run ----------------------------------------------------------------------------------


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    documents: int = 0
    chunks: int = 0
    took_s: float = 0.0
    #: wall seconds per phase: ``scan`` (walk, stat, manifest), ``read`` (read and extract text),
    #: ``chunk``, ``store`` (chunk store commits); the publish adds the legs' phases
    phases: dict[str, float] = field(default_factory=dict)
    reprocessed: int = 0  # of ``updated``: unchanged files re-read because their versions were older
    notes: list[dict[str, str]] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)
    #: absolute path -> error of each failed file (``failed`` names them by source); not in as_dict
    failed_paths: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "failed": self.failed,
            "documents": self.documents,
            "chunks": self.chunks,
            "took_s": round(self.took_s, 3),
            "phases": {name: round(seconds, 3) for name, seconds in self.phases.items()},
            "reprocessed": self.reprocessed,
            "notes": self.notes,
            "redactions": self.redactions,
        }


def _collect(paths: Sequence[Path], settings: IngestSettings) -> tuple[list[FoundFile], list[Path]]:
    """Expand the given paths into files; also return the folders whose contents are synced (for deletions)."""
    files: list[FoundFile] = []
    roots: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise InputError(f"path not found: {raw}", hint="check the path; nothing was ingested")
        p = p.resolve()
        if p.is_dir():
            roots.append(p)
            files.extend(walk(p, settings))
        else:
            files.append(FoundFile(path=p, root=p.parent, source=p.name))
    seen: set[Path] = set()
    unique = [f for f in files if not (f.path in seen or seen.add(f.path))]  # type: ignore[func-returns-value]
    return unique, roots


@dataclass(slots=True)
class _Job:
    """One file to (re)read; everything a worker process needs."""

    found: FoundFile
    fmt: DocFormat
    known_hash: str | None  # content hash of the stored version, when the pipeline is unchanged


@dataclass(slots=True)
class _Outcome:
    content_hash: str | None = None
    doc: ExtractedDocument | None = None  # None with no error: bytes unchanged
    chunks: list[Chunk] | None = None
    error: str | None = None
    read_s: float = 0.0  # reading, hashing, extracting (in the worker)
    chunk_s: float = 0.0


def _read_and_chunk(job: _Job, ingest: IngestSettings, chunking: ChunkingSettings) -> _Outcome:
    """Pure per-file work (runs in a worker process): read, hash, extract, redact, chunk."""
    found = job.found
    t0 = time.perf_counter()
    try:
        data = found.path.read_bytes()
        content_hash = hashlib.sha256(data).hexdigest()
        if content_hash == job.known_hash:
            return _Outcome(content_hash=content_hash, read_s=time.perf_counter() - t0)
        doc = extract(data, job.fmt, ingest, name=found.source)
        t1 = time.perf_counter()
        chunks = chunk_document(doc, doc_id=doc_id_for(found.path), source=found.source, chunking=chunking)
        return _Outcome(
            content_hash=content_hash,
            doc=doc,
            chunks=chunks,
            read_s=t1 - t0,
            chunk_s=time.perf_counter() - t1,
        )
    except DocumentError as exc:
        return _Outcome(error=exc.one_line(), read_s=time.perf_counter() - t0)
    except OSError as exc:
        return _Outcome(error=f"cannot read file: {exc.strerror or exc}", read_s=time.perf_counter() - t0)
    except Exception as exc:  # a bug or a library crash on one file must not stop the run
        return _Outcome(
            error=f"internal error while reading: {type(exc).__name__}: {exc}",
            read_s=time.perf_counter() - t0,
        )


def _outcomes(jobs: list[_Job], settings: Settings, workers: int) -> Iterator[tuple[_Job, _Outcome]]:
    """Outcomes in job order; a process pool when there is enough work to pay for it."""
    if workers <= 1 or len(jobs) < 2 * PARALLEL_MIN_JOBS:
        for job in jobs:
            yield job, _read_and_chunk(job, settings.ingest, settings.chunking)
        return
    from concurrent.futures import ProcessPoolExecutor

    work = functools.partial(_read_and_chunk, ingest=settings.ingest, chunking=settings.chunking)
    with ProcessPoolExecutor(max_workers=workers, mp_context=_spawn()) as pool:
        yield from zip(jobs, pool.map(work, jobs, chunksize=8), strict=True)


def _spawn() -> Any:
    import multiprocessing

    return multiprocessing.get_context("spawn")  # no fork: the caller may hold threads and open handles


def sync_paths(
    paths: Sequence[Path],
    settings: Settings,
    store: ChunkStore,
    *,
    progress: ProgressFn | None = None,
) -> IngestReport:
    """Bring the store in step with ``paths`` (files and folders). Takes the store's writer lock.

    Files whose size and mtime match the manifest are skipped without reading;
    the rest are read, hashed and (when the bytes changed) extracted and chunked,
    in ``settings.ingest.workers`` processes. All writes happen here, whole
    documents per transaction.
    """
    t0 = time.perf_counter()
    report = IngestReport()
    clock = _Clock()
    files, roots = _collect(paths, settings.ingest)
    fingerprint = pipeline_fingerprint(settings)
    max_bytes = int(settings.ingest.max_file_mb * 1024 * 1024)
    store.acquire_writer_lock()
    generation = store.generation()
    try:
        pending: list[Callable[[StoreWriter], object]] = []
        last_commit = time.monotonic()

        def flush(force: bool = False) -> None:
            nonlocal last_commit
            due = len(pending) >= settings.ingest.commit_every or time.monotonic() - last_commit > 2.0
            if pending and (force or due):
                with clock.timing("store"), store.transaction() as tx:
                    for op in pending:
                        op(tx)
                pending.clear()
                last_commit = time.monotonic()

        jobs: list[_Job] = []
        existing: dict[str, DocumentRecord | None] = {}
        for found in files:  # cheap pass: stat + manifest lookup
            record = existing[str(found.path)] = store.document_by_path(str(found.path))
            job = _plan(found, record, fingerprint, max_bytes, settings, report, pending)
            if job is not None:
                jobs.append(job)
        clock.add("scan", time.perf_counter() - t0)
        flush(force=True)

        done = len(files) - len(jobs)
        outcomes = _outcomes(jobs, settings, settings.ingest.workers)
        worker = {"read": 0.0, "chunk": 0.0}
        waited = 0.0
        while True:
            t = time.perf_counter()
            item = next(outcomes, None)
            waited += time.perf_counter() - t
            if item is None:
                break
            job, outcome = item
            worker["read"] += outcome.read_s
            worker["chunk"] += outcome.chunk_s
            done += 1
            if progress:
                with clock.timing("publish"):  # a server publishes what is committed from here
                    progress(done, len(files), job.found.source)
            with clock.timing("store"):
                _apply(
                    job, outcome, existing[str(job.found.path)], fingerprint, settings.ingest, report, pending
                )
            flush()
        # the wall time spent waiting for outcomes, split as the workers spent it
        busy = worker["read"] + worker["chunk"]
        clock.add("read", waited * (worker["read"] / busy if busy else 1.0))
        clock.add("chunk", waited * (worker["chunk"] / busy if busy else 0.0))
        flush(force=True)

        t = time.perf_counter()
        seen = {str(f.path) for f in files}
        for root in roots:
            for doc in store.documents(under=str(root)):
                if doc.path not in seen:
                    pending.append(functools.partial(StoreWriter.delete_document, doc_id=doc.doc_id))
                    report.deleted += 1
        clock.add("scan", time.perf_counter() - t)
        flush(force=True)
        with clock.timing("store"):
            if store.generation() != generation:
                store.truncate_wal()  # replaced and deleted text leaves the disk now, not at some later checkpoint
        if progress:
            with clock.timing("publish"):
                progress(len(files), len(files), "")
    finally:
        store.release_writer_lock()
    t = time.perf_counter()
    report.documents = store.count_documents()
    report.chunks = store.count_chunks()
    clock.add("store", time.perf_counter() - t)
    report.took_s = time.perf_counter() - t0
    report.phases = {name: clock.seconds.get(name, 0.0) for name in ("scan", "read", "chunk", "store")}
    if clock.seconds.get("publish"):
        report.phases["publish"] = clock.seconds["publish"]
    return report


class _Clock:
    """Wall seconds per phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def timing(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)


def _plan(
    found: FoundFile,
    existing: DocumentRecord | None,
    fingerprint: str,
    max_bytes: int,
    settings: Settings,
    report: IngestReport,
    pending: list[Callable[[StoreWriter], object]],
) -> _Job | None:
    """Decide from stat + manifest alone; a job when the file must be read."""
    try:
        st = found.path.stat()
    except OSError as exc:
        _failed(found, f"cannot read file: {exc.strerror or exc}", existing, report, pending)
        return None
    fmt = SUPPORTED_SUFFIXES.get(found.path.suffix.lower())
    if fmt is None:
        err: DocumentError = UnsupportedFileError(
            f"unsupported file type {found.path.suffix or '(none)'}",
            hint="supported: .md .markdown .txt .pdf",
        )
        _failed(found, err.one_line(), existing, report, pending)
        return None
    same_pipeline = (
        existing is not None
        and existing.pipeline == fingerprint
        and not is_outdated(existing, settings.ingest)
    )
    if (
        existing is not None
        and same_pipeline
        and (existing.size, existing.mtime_ns) == (st.st_size, st.st_mtime_ns)
    ):
        _unchanged(existing, found, st, report, pending)
        return None
    if st.st_size > max_bytes:
        err = FileTooLargeError(
            f"file is {st.st_size / 2**20:.1f} MiB, over the {settings.ingest.max_file_mb:g} MiB limit",
            hint="raise RAG_INGEST__MAX_FILE_MB to ingest it",
        )
        _failed(found, err.one_line(), existing, report, pending)
        return None
    known = existing.content_hash if existing is not None and same_pipeline else None
    return _Job(found=found, fmt=fmt, known_hash=known)  # type: ignore[arg-type]


def _apply(
    job: _Job,
    outcome: _Outcome,
    existing: DocumentRecord | None,
    fingerprint: str,
    ingest: IngestSettings,
    report: IngestReport,
    pending: list[Callable[[StoreWriter], object]],
) -> None:
    found = job.found
    if outcome.error is not None:
        _failed(found, outcome.error, existing, report, pending)
        return
    try:
        st = found.path.stat()
    except OSError as exc:
        _failed(found, f"cannot read file: {exc.strerror or exc}", existing, report, pending)
        return
    if outcome.doc is None:
        assert existing is not None
        _unchanged(existing, found, st, report, pending)
        return
    doc, chunks = outcome.doc, outcome.chunks or []
    redactor, repair = versions_for(ingest, doc.format)
    record = DocumentRecord(
        doc_id=doc_id_for(found.path),
        path=str(found.path),
        root=str(found.root),
        source=found.source,
        format=doc.format,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        content_hash=outcome.content_hash or "",
        pipeline=fingerprint,
        n_pages=len(doc.pages) if doc.pages else None,
        n_chunks=len(chunks),
        encoding=doc.encoding,
        notes=doc.notes,
        redactions=doc.redactions,
        ingested_at=time.time(),
        redactor_version=redactor,
        repair_version=repair,
    )
    pending.append(functools.partial(StoreWriter.put_document, doc=record, text=doc.text, chunks=chunks))
    if existing:
        report.updated += 1
        if (existing.content_hash, existing.pipeline) == (outcome.content_hash, fingerprint):
            report.reprocessed += 1  # same bytes, same settings: re-read for a newer redactor or repair
    else:
        report.added += 1
    for note in doc.notes:
        report.notes.append({"path": found.source, "note": note})
    for kind, n in doc.redactions.items():
        report.redactions[kind] = report.redactions.get(kind, 0) + n


def _unchanged(
    existing: DocumentRecord,
    found: FoundFile,
    st: os.stat_result,
    report: IngestReport,
    pending: list[Callable[[StoreWriter], object]],
) -> None:
    report.unchanged += 1
    if (existing.size, existing.mtime_ns, existing.root, existing.source) != (
        st.st_size,
        st.st_mtime_ns,
        str(found.root),
        found.source,
    ):
        pending.append(
            lambda tx: tx.touch(
                existing.doc_id,
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                root=str(found.root),
                source=found.source,
            )
        )


def _failed(
    found: FoundFile,
    message: str,
    existing: DocumentRecord | None,
    report: IngestReport,
    pending: list[Callable[[StoreWriter], object]],
) -> None:
    report.failed.append({"path": found.source, "error": message})
    report.failed_paths[str(found.path)] = message
    if existing is not None:  # its old chunks no longer describe the file
        pending.append(lambda tx: tx.delete_document(existing.doc_id))
