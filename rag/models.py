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
    """A unit of retrieval, as stored in the chunk store (the source of truth)."""

    chunk_id: str
    doc_id: str
    source: str
    ordinal: int
    text: str
    start: int
    end: int
    page: int | None
    heading_path: tuple[str, ...] = ()

    @property
    def heading(self) -> str:
        return " > ".join(self.heading_path)

    def index_text(self) -> str:
        """Text the indexes see: heading path first, so headings are searchable."""
        return f"{self.heading}\n{self.text}" if self.heading_path else self.text
