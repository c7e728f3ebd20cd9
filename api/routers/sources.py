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
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
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
MIN_FRAGMENT = 4
#: A fragment that is not found is split in halves down to this length.
MIN_SPLIT = 8
HIGHLIGHT_RGB = (1.0, 0.86, 0.2)

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
        body.update(pdf_page(record, chunk, text, quote))
    else:
        body["text"] = text
    return JSONResponse(body)


# -- PDF pages ------------------------------------------------------------------------------------


def fragments(text: str) -> list[str]:
    """Searchable pieces of a chunk or quote: lines and sentences without markdown markup."""
    out: list[str] = []
    for piece in _SPLIT_RE.split(text.replace("…", "\n")):
        if piece.strip().startswith(("```", "~~~")):
            continue
        clean = " ".join(_MARKUP_RE.sub(" ", piece).split())
        if len(clean) >= MIN_FRAGMENT:
            out.append(clean)
    return out


def _search(page: Any, fragment: str) -> Iterator[Any]:
    """Rects of ``fragment`` on ``page``; a fragment not found whole is tried in halves (its
    lines may have been joined differently at extraction)."""
    found = page.search_for(fragment)
    if found:
        yield from found
    elif len(fragment) >= 2 * MIN_SPLIT:
        mid = len(fragment) // 2
        yield from _search(page, fragment[:mid].strip())
        yield from _search(page, fragment[mid:].strip())


def find_rects(page: Any, chunk_text: str, quote: str | None) -> list[Any]:
    """Where the quote is on the page; where it is not found, where the chunk's text is."""
    for text in (quote, chunk_text):
        if not text:
            continue
        rects = [r for frag in fragments(text) for r in _search(page, frag)]
        if rects:
            return rects
    return []


def page_text_marks(page: Any, rects: list[Any]) -> tuple[str, list[list[int]]]:
    """The page's text (lines joined by newlines, blocks by blank lines) and the character
    ranges of it whose glyphs lie under ``rects``."""
    parts: list[str] = []
    marks: list[list[int]] = []
    pos = 0
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
                    x0, y0, x1, y1 = ch["bbox"]
                    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                    hit = any(r.x0 <= cx <= r.x1 and r.y0 <= cy <= r.y1 for r in rects)
                    if hit and not c.isspace():
                        if marks and marks[-1][1] >= pos - 1:
                            marks[-1][1] = pos + len(c)
                        else:
                            marks.append([pos, pos + len(c)])
                    parts.append(c)
                    pos += len(c)
            parts.append("\n")
            pos += 1
    return "".join(parts), marks


def quoted(page_text: str, marks: list[list[int]]) -> str:
    return " … ".join(" ".join(page_text[a:b].split()) for a, b in marks)


def pdf_page(record: DocumentRecord, chunk: Chunk, text: str, quote: str | None) -> dict[str, Any]:
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
        rects = find_rects(page, chunk.text, quote)
        page_text, marks = page_text_marks(page, rects)
        for rect in rects:
            annot = page.add_highlight_annot(rect)
            annot.set_colors(stroke=HIGHLIGHT_RGB)
            annot.update()
        png = page.get_pixmap(dpi=PAGE_DPI, annots=True).tobytes("png")
        first = rects[0] if rects else None
        return {
            "image": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            "image_size": [page.rect.width, page.rect.height],
            "highlight_top": None if first is None else first.y0 / page.rect.height,
            "page_text": page_text,
            "marks": marks,
            "quote": quoted(page_text, marks) or None,
            "error": None if rects else "the passage was not found on the page",
        }
    finally:
        doc.close()
