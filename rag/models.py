"""Plain data shared by every layer: extracted documents and their chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DocFormat = Literal["markdown", "text", "pdf"]


@dataclass(frozen=True, slots=True)
class PageSpan:
    """Page ``page`` (1-based) covers ``text[start:end]`` of the extracted document."""

    page: int
    start: int
    end: int


@dataclass(slots=True)
class ExtractedDocument:
    """A file turned into one string of text, before chunking.

    ``text`` is what offsets point into (after encoding repair and secret
    redaction). ``pages`` is set for PDFs only. ``notes`` are human-readable
    remarks for the ingest report (e.g. "repaired mojibake: 1,234 chars").
    """

    text: str
    format: DocFormat
    pages: list[PageSpan] | None = None
    encoding: str | None = None
    notes: list[str] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)
    #: the document's title where the file names one (PDF metadata or the first page's largest
    #: line, a markdown document's first ``#`` heading): indexed with every chunk, never shown in it
    title: str | None = None
    #: page -> the lines repeated at the top or bottom of many pages that this page carries
    #: (running headers and footers, page numbers left out); PDFs only
    running_headers: dict[int, tuple[str, ...]] = field(default_factory=dict)

    def page_at(self, offset: int) -> int | None:
        """1-based page holding character ``offset`` (``None`` for non-paged text)."""
        if not self.pages:
            return None
        for span in self.pages:
            if offset < span.end:
                return span.page
        return self.pages[-1].page


@dataclass(frozen=True, slots=True)
class ChunkSpan:
    """What the chunker returns: ``text[start:end]`` under ``heading_path``."""

    start: int
    end: int
    heading_path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Chunk:
    """A unit of retrieval, as stored in the chunk store (the source of truth).

    ``text`` is exactly ``document text[start:end]``, what a user is shown. ``context`` is what
    identifies the chunk but is not in its text (the document title, the page's running header,
    the column headers of the table it starts inside): the indexes see it, users do not.
    """

    chunk_id: str
    doc_id: str
    source: str
    ordinal: int
    text: str
    start: int
    end: int
    page: int | None
    heading_path: tuple[str, ...] = ()
    context: str = ""

    @property
    def heading(self) -> str:
        return " > ".join(self.heading_path)

    def index_text(self, *, with_context: bool = True) -> str:
        """Text the indexes see: heading path and context first, so both are searchable.
        ``with_context=False``: heading path and text only (what the chunk says of itself)."""
        context = self.context if with_context else ""
        head = "\n".join(p for p in (self.heading, context) if p)
        return f"{head}\n{self.text}" if head else self.text
