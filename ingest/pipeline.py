"""Folder sync: files -> extracted text -> redacted -> chunks -> chunk store.

``sync_paths`` walks the given files and folders, and for each file decides
from the manifest (path, size, mtime, content hash, pipeline fingerprint)
whether it is new, changed or unchanged; files that disappeared from a walked
folder are deleted. Each document is written whole inside a store transaction,
so an interrupted run followed by a re-run ends in the same state as one
uninterrupted run. Bad files never stop the run: they are reported in
``failed`` and any stale chunks of theirs are removed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.chunking import chunk_markdown, chunk_plain
from ingest.encoding import decode_bytes
from ingest.pdf import extract_pdf
from ingest.secrets import redact
from ingest.walk import SUPPORTED_SUFFIXES, FoundFile, walk
from rag.errors import DocumentError, FileTooLargeError, InputError, UnsupportedFileError
from rag.models import Chunk, DocFormat, ExtractedDocument, PageSpan
from rag.settings import ChunkingSettings, IngestSettings, Settings
from rag.store import ChunkStore, DocumentRecord, StoreWriter

# Bump when extraction or chunking changes in a way that should re-process unchanged files.
EXTRACTOR_VERSION = 1

ProgressFn = Callable[[int, int, str], None]


def _hash(*parts: str | bytes, size: int = 8) -> str:
    h = hashlib.blake2b(digest_size=size)
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()


def doc_id_for(path: Path) -> str:
    """Stable id of a document: a hash of its absolute path."""
    return _hash(str(path))


def pipeline_fingerprint(settings: Settings) -> str:
    """Everything that changes the chunks of an unchanged file."""
    return json.dumps(
        {
            "v": EXTRACTOR_VERSION,
            "chunk": [settings.chunking.size, settings.chunking.overlap],
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
    if counts:
        total = sum(counts.values())
        notes.append(
            f"redacted {total} secret(s): " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        )
    return ExtractedDocument(
        text=text, format=doc.format, pages=pages, encoding=doc.encoding, notes=notes, redactions=counts
    )


def chunk_document(
    doc: ExtractedDocument, *, doc_id: str, source: str, chunking: ChunkingSettings
) -> list[Chunk]:
    """Cut an extracted document into chunks with page numbers, offsets and heading paths."""
    breaks = [p.start for p in doc.pages[1:]] if doc.pages else []
    splitter = chunk_plain if doc.format == "text" else chunk_markdown
    spans = splitter(doc.text, size=chunking.size, overlap=chunking.overlap, hard_breaks=breaks)
    chunks = []
    for i, span in enumerate(spans):
        text = doc.text[span.start : span.end]
        chunks.append(
            Chunk(
                chunk_id=_hash(doc_id, str(span.start), str(span.end), text),
                doc_id=doc_id,
                source=source,
                ordinal=i,
                text=text,
                start=span.start,
                end=span.end,
                page=doc.page_at(span.start),
                heading_path=span.heading_path,
            )
        )
    return chunks


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
    notes: list[dict[str, str]] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)

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


def sync_paths(
    paths: Sequence[Path],
    settings: Settings,
    store: ChunkStore,
    *,
    progress: ProgressFn | None = None,
) -> IngestReport:
    """Bring the store in step with ``paths`` (files and folders). Takes the store's writer lock."""
    t0 = time.perf_counter()
    report = IngestReport()
    files, roots = _collect(paths, settings.ingest)
    fingerprint = pipeline_fingerprint(settings)
    max_bytes = int(settings.ingest.max_file_mb * 1024 * 1024)
    store.acquire_writer_lock()
    try:
        pending: list[Callable[[StoreWriter], object]] = []
        last_commit = time.monotonic()

        def flush() -> None:
            nonlocal last_commit
            if pending:
                with store.transaction() as tx:
                    for op in pending:
                        op(tx)
                pending.clear()
            last_commit = time.monotonic()

        for i, found in enumerate(files):
            if progress:
                progress(i, len(files), found.source)
            _sync_one(found, store, settings, fingerprint, max_bytes, report, pending)
            if len(pending) >= settings.ingest.commit_every or time.monotonic() - last_commit > 2.0:
                flush()
        flush()

        seen = {str(f.path) for f in files}
        for root in roots:
            for doc in store.documents(under=str(root)):
                if doc.path not in seen:
                    pending.append(functools.partial(StoreWriter.delete_document, doc_id=doc.doc_id))
                    report.deleted += 1
        flush()
        if progress:
            progress(len(files), len(files), "")
    finally:
        store.release_writer_lock()
    report.documents = store.count_documents()
    report.chunks = store.count_chunks()
    report.took_s = time.perf_counter() - t0
    return report


def _sync_one(
    found: FoundFile,
    store: ChunkStore,
    settings: Settings,
    fingerprint: str,
    max_bytes: int,
    report: IngestReport,
    pending: list[Callable[[StoreWriter], object]],
) -> None:
    path_str = str(found.path)
    root_str = str(found.root)
    existing = store.document_by_path(path_str)
    try:
        st = found.path.stat()
        fmt = SUPPORTED_SUFFIXES.get(found.path.suffix.lower())
        if fmt is None:
            raise UnsupportedFileError(
                f"unsupported file type {found.path.suffix or '(none)'}",
                hint="supported: .md .markdown .txt .pdf",
            )
        if (
            existing
            and existing.pipeline == fingerprint
            and (existing.size, existing.mtime_ns)
            == (
                st.st_size,
                st.st_mtime_ns,
            )
        ):
            _unchanged(existing, found, st, report, pending)
            return
        if st.st_size > max_bytes:
            raise FileTooLargeError(
                f"file is {st.st_size / 2**20:.1f} MiB, over the {settings.ingest.max_file_mb:g} MiB limit",
                hint="raise RAG_INGEST__MAX_FILE_MB to ingest it",
            )
        data = found.path.read_bytes()
        content_hash = hashlib.sha256(data).hexdigest()
        if existing and existing.pipeline == fingerprint and existing.content_hash == content_hash:
            _unchanged(existing, found, st, report, pending)
            return
        doc = extract(data, fmt, settings.ingest, name=found.source)  # type: ignore[arg-type]
        doc_id = doc_id_for(found.path)
        chunks = chunk_document(doc, doc_id=doc_id, source=found.source, chunking=settings.chunking)
    except DocumentError as exc:
        _failed(found, exc.one_line(), existing, report, pending)
        return
    except OSError as exc:
        _failed(found, f"cannot read file: {exc.strerror or exc}", existing, report, pending)
        return
    except Exception as exc:  # a bug or a library crash on one file must not stop the run
        _failed(
            found, f"internal error while reading: {type(exc).__name__}: {exc}", existing, report, pending
        )
        return

    record = DocumentRecord(
        doc_id=doc_id,
        path=path_str,
        root=root_str,
        source=found.source,
        format=doc.format,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        content_hash=content_hash,
        pipeline=fingerprint,
        n_pages=len(doc.pages) if doc.pages else None,
        n_chunks=len(chunks),
        encoding=doc.encoding,
        notes=doc.notes,
        redactions=doc.redactions,
        ingested_at=time.time(),
    )
    pending.append(lambda tx: tx.put_document(record, doc.text, chunks))
    if existing:
        report.updated += 1
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
    if existing is not None:  # its old chunks no longer describe the file
        pending.append(lambda tx: tx.delete_document(existing.doc_id))
