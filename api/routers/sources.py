"""``GET /v1/chunks/{chunk_id}/source``: the passage a citation or a hit points at, in its document.

For text and markdown the body carries the document's stored text (the text the
chunk offsets point into: repaired, with secrets redacted) and the chunk's
``start``/``end`` in it, so that a client can mark exactly the cited characters.

For a PDF it carries the cited page: rendered to PNG by PyMuPDF from the file
on disk, with the passage highlighted on it, and the page's text as the file
holds it, with ``marks`` (character ranges of ``page_text``) under the
highlight. ``quote`` is the highlighted text read back from the file, so what
is shown as the quote is what the file says (never a paraphrase). When the file
is gone or cannot be read, ``image`` is null, ``error`` says why, and the page
text comes from the stored text instead.

Secrets that ingest redacted stay hidden: each value that the stored text
replaced with a ``[REDACTED:kind]`` placeholder is located on the page (between
the text either side of the placeholder), blacked out and removed from the
page before it is rendered or its text read. A page where one cannot be located
is not rendered at all.
"""

from __future__ import annotations

import base64
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from starlette.responses import Response

from api.auth import require_read
from api.service import EngineDep
from rag.errors import NotFoundError
from rag.models import Chunk
from rag.store import DocumentRecord

router = APIRouter(tags=["search"], dependencies=[Depends(require_read)])

#: Resolution of the rendered page (72 = the page's own size in points).
PAGE_DPI = 110
#: Fragments shorter than this are not searched on the page alone (too many chance matches).
MIN_FRAGMENT = 6
#: A fragment that is not found is split in halves down to this length.
MIN_SPLIT = 8
HIGHLIGHT_RGB = (1.0, 0.86, 0.2)
#: Non-space characters either side of a redaction placeholder that locate the secret on the page.
SECRET_CONTEXT = 12

_REDACTED_RE = re.compile(r"(?:\[REDACTED:[A-Za-z0-9_]+\]\s*)+")

_MARKUP_RE = re.compile(r"^\s{0,3}(?:#{1,6}\s+|[-*+]\s+|>\s*|\d{1,3}[.)]\s+)|\*\*|__|`+|\|")
_SPLIT_RE = re.compile(r"\n+|(?<=[。！？；!?;])|(?<=\.)\s+")


@router.get(
    "/v1/chunks/{chunk_id}/source",
    summary="The cited passage in its document (text with offsets, or the PDF page as an image)",
)
def chunk_source(
    chunk_id: str,
    engine: EngineDep,
    quote: Annotated[
        str | None,
        Query(max_length=4000, description="The citation's quote: highlighted on a PDF page if found."),
    ] = None,
) -> Response:
    """Everything the web page shows when a citation or a hit is opened: `source`, `heading_path`,
    `start`/`end` of the chunk in the document's text; for text documents the whole `text`; for
    PDFs `page`, `pages`, `image` (a `data:image/png` URL of the page with the passage
    highlighted), `page_text`, `marks` and `quote` (the highlighted text as the file has it)."""
    with engine.reading():
        chunks = engine.store.get_chunks([chunk_id])
        if not chunks:
            raise NotFoundError(f"no chunk {chunk_id}", hint="chunk ids come from search hits and citations")
        chunk = chunks[0]
        record = engine.store.document(chunk.doc_id)
        text = engine.store.document_text(chunk.doc_id)
        on_page = [
            c for c in engine.store.chunks_of(chunk.doc_id) if c.page is not None and c.page == chunk.page
        ]
    if record is None or text is None:
        raise NotFoundError(f"the document of chunk {chunk_id} is gone", hint="search again")
    body: dict[str, Any] = {
        "chunk_id": chunk.chunk_id,
        "doc_id": chunk.doc_id,
        "source": chunk.source,
        "format": record.format,
        "heading_path": list(chunk.heading_path),
        "start": chunk.start,
        "end": chunk.end,
        "chunk_text": chunk.text,
        "page": chunk.page,
        "pages": record.n_pages,
    }
    if record.format == "pdf" and chunk.page is not None:
        stored_page = text[min(c.start for c in on_page) : max(c.end for c in on_page)]
        body.update(pdf_page(record, chunk, stored_page, quote))
    else:
        body["text"] = text
    return JSONResponse(body)


# -- PDF pages ------------------------------------------------------------------------------------


def fragments(text: str) -> list[str]:
    """Searchable pieces of a chunk or quote: lines and sentences without markdown markup, with
    no whitespace (the page's glyphs are matched without it: lines break differently there)."""
    out: list[str] = []
    for piece in _SPLIT_RE.split(text.replace("…", "\n")):
        if piece.strip().startswith(("```", "~~~")):
            continue
        clean = "".join(_MARKUP_RE.sub(" ", piece).split())
        if len(clean) >= MIN_FRAGMENT:
            out.append(clean)
    return out


@dataclass(slots=True)
class PageGlyphs:
    """The page's text as the file has it, and where each of its non-space characters is."""

    text: str  # lines joined by newlines, blocks separated by a blank line
    compact: str  # the non-space characters of ``text``, in order
    offsets: list[int]  # ``compact[i]`` is ``text[offsets[i]]``
    boxes: list[tuple[float, float, float, float]]  # the glyph of ``compact[i]``
    lines: list[int]  # which line ``compact[i]`` is on

    @classmethod
    def read(cls, page: Any) -> PageGlyphs:
        parts: list[str] = []
        compact: list[str] = []
        offsets: list[int] = []
        boxes: list[tuple[float, float, float, float]] = []
        lines: list[int] = []
        pos = line_no = 0
        for block in page.get_text("rawdict")["blocks"]:
            if block.get("type", 0) != 0:
                continue
            if parts:
                parts.append("\n")
                pos += 1
            for line in block["lines"]:
                for span in line["spans"]:
                    for ch in span["chars"]:
                        c = ch["c"]
                        if not c.isspace():
                            compact.append(c)
                            offsets.append(pos)
                            boxes.append(tuple(ch["bbox"]))
                            lines.append(line_no)
                        parts.append(c)
                        pos += len(c)
                parts.append("\n")
                pos += 1
                line_no += 1
        return cls("".join(parts), "".join(compact), offsets, boxes, lines)

    def find(self, fragment: str, start: int) -> tuple[int, int] | None:
        """Where ``fragment`` is (from ``start`` on, else anywhere), as a range of ``compact``;
        a fragment not found whole is found in halves (text may differ in a few characters)."""
        at = self.compact.find(fragment, start)
        if at < 0:
            at = self.compact.find(fragment)
        if at >= 0:
            return at, at + len(fragment)
        return None

    def match(self, text: str) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        cursor = 0

        def search(fragment: str) -> None:
            nonlocal cursor
            hit = self.find(fragment, cursor)
            if hit is not None:
                found.append(hit)
                cursor = hit[1]
            elif len(fragment) >= 2 * MIN_SPLIT:
                mid = len(fragment) // 2
                search(fragment[:mid])
                search(fragment[mid:])

        for fragment in fragments(text):
            search(fragment)
        return sorted(found)

    def marks(self, ranges: list[tuple[int, int]]) -> list[list[int]]:
        """``ranges`` of ``compact`` as ranges of ``text`` (ranges only whitespace apart merge)."""
        out: list[list[int]] = []
        for a, b in ranges:
            lo, hi = self.offsets[a], self.offsets[b - 1] + 1
            if out and (lo <= out[-1][1] or not self.text[out[-1][1] : lo].strip()):
                out[-1][1] = max(out[-1][1], hi)
            else:
                out.append([lo, hi])
        return out

    def rects(self, ranges: list[tuple[int, int]]) -> list[tuple[float, float, float, float]]:
        """One rectangle per line of each range: what to highlight on the page."""
        out: list[tuple[float, float, float, float]] = []
        for a, b in ranges:
            i = a
            while i < b:
                j = i
                while j + 1 < b and self.lines[j + 1] == self.lines[i]:
                    j += 1
                xs0, ys0, xs1, ys1 = zip(*self.boxes[i : j + 1], strict=True)
                out.append((min(xs0), min(ys0), max(xs1), max(ys1)))
                i = j + 1
        return out


def locate(glyphs: PageGlyphs, chunk_text: str, quote: str | None) -> list[tuple[int, int]]:
    """Where the quote is on the page; where it is not found, where the chunk's text is."""
    for text in (quote, chunk_text):
        if text:
            ranges = glyphs.match(text)
            if ranges:
                return ranges
    return []


_CJK = "\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_BREAK_RE = re.compile(rf"(?<=[{_CJK}])\s*\n\s*(?=[{_CJK}])")


def quoted(page_text: str, marks: list[list[int]]) -> str:
    """The marked text, one line: a line break between CJK characters joins them, any other
    run of spaces becomes one; separate marked passages are joined with an ellipsis."""
    return " … ".join(" ".join(_CJK_BREAK_RE.sub("", page_text[a:b]).split()) for a, b in marks)


def _compact(text: str) -> str:
    return "".join(
        "".join(_MARKUP_RE.sub(" ", line).split())
        for line in text.split("\n")
        if not line.strip().startswith(("```", "~~~"))
    )


def secret_ranges(glyphs: PageGlyphs, stored_page: str) -> list[tuple[int, int]] | None:
    """Where on the page are the values the stored text redacted (ranges of ``glyphs.compact``):
    between the text just before and just after each placeholder. None when one of them cannot be
    located (then the page must not be shown)."""
    pieces = _REDACTED_RE.split(stored_page)
    out: list[tuple[int, int]] = []
    cursor = 0
    for before, after in itertools.pairwise(pieces):
        left, right = _compact(before)[-SECRET_CONTEXT:], _compact(after)[:SECRET_CONTEXT]
        lo = cursor
        if left:
            at = glyphs.compact.find(left, cursor)
            if at < 0:
                return None
            lo = at + len(left)
        hi = glyphs.compact.find(right, lo) if right else len(glyphs.compact)
        if hi < 0:
            return None
        if hi > lo:
            out.append((lo, hi))
        cursor = hi
    return out


def pdf_page(record: DocumentRecord, chunk: Chunk, stored_page: str, quote: str | None) -> dict[str, Any]:
    import pymupdf

    assert chunk.page is not None
    path = Path(record.path)
    fallback = {"image": None, "page_text": chunk.text, "marks": [[0, len(chunk.text)]], "quote": None}
    if not path.is_file():
        return {**fallback, "error": f"the file is no longer at {record.path}"}
    try:
        doc = pymupdf.open(path)
    except Exception as exc:  # a damaged or replaced file: show the stored text instead
        return {**fallback, "error": f"cannot open {record.source}: {type(exc).__name__}"}
    try:
        if doc.needs_pass or not 1 <= chunk.page <= doc.page_count:
            return {**fallback, "error": f"page {chunk.page} cannot be read from {record.source}"}
        page = doc[chunk.page - 1]
        glyphs = PageGlyphs.read(page)
        secrets = secret_ranges(glyphs, stored_page)
        if secrets is None:
            return {**fallback, "error": "the page holds redacted secrets that could not be located on it"}
        if secrets:  # black them out on the page, and drop them from its text, as ingest did
            for rect in glyphs.rects(secrets):
                x0, y0, x1, y1 = rect
                page.add_redact_annot(pymupdf.Rect(x0 + 0.3, y0, x1 - 0.3, y1), fill=(0, 0, 0))
            page.apply_redactions(images=getattr(pymupdf, "PDF_REDACT_IMAGE_NONE", 0))  # keep images
            glyphs = PageGlyphs.read(page)
        ranges = locate(glyphs, chunk.text, quote)
        rects = glyphs.rects(ranges)
        marks = glyphs.marks(ranges)
        for rect in rects:
            annot = page.add_highlight_annot(pymupdf.Rect(rect))
            annot.set_colors(stroke=HIGHLIGHT_RGB)
            annot.update()
        png = page.get_pixmap(dpi=PAGE_DPI, annots=True).tobytes("png")
        return {
            "image": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            "image_size": [page.rect.width, page.rect.height],
            "highlight_top": rects[0][1] / page.rect.height if rects else None,
            "page_text": glyphs.text,
            "marks": marks,
            "quote": quoted(glyphs.text, marks) or None,
            "error": None if rects else "the passage was not found on the page",
        }
    finally:
        doc.close()
