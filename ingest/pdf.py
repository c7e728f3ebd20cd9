"""PDF bytes -> :class:`~rag.models.ExtractedDocument`, page by page, with PyMuPDF.

Two modes:

``"text"`` (the default)
    PyMuPDF's own text extraction (``get_text("dict")``), laid out as light markdown so that the
    markdown chunker can build heading paths: lines set clearly larger than the document's body
    size become ``#``/``##``/... headings (largest size first), short stand-alone bold lines at
    body size become the next level down, monospaced runs become fenced code blocks, ruled tables
    (found from the page's vector rules, where at least three horizontal and three vertical rules
    touch, their cells filled from the text already read for the page) become markdown tables in
    place of their cell text. Soft line breaks inside a paragraph are
    joined: with nothing between two CJK characters, with a space otherwise; nothing is
    de-hyphenated. Blocks keep PyMuPDF's reading order (the order of the content stream).

``"markdown"``
    ``pymupdf4llm.to_markdown(page_chunks=True)`` on its rule-based path (the layout model is
    switched off for the process: it is several times slower and not needed for notes).

Offsets: the page texts are joined with :data:`PAGE_SEPARATOR` (``"\\n\\n"``) and that separator
belongs to no page: ``text[span.start:span.end]`` is exactly the text of page ``span.page``, the
next span starts two characters after the previous one ends, and a page without text has an empty
span (``start == end``). Text never moves from one page to another.

Errors (all :class:`~rag.errors.DocumentError`): a password-protected file raises
:class:`EncryptedPdfError`; bytes that are not a PDF, or a PDF damaged so badly that no page
yields text, raise :class:`CorruptPdfError`; a readable PDF without text on any page raises
:class:`NoTextLayerError`. A file that MuPDF had to repair, or with some pages unreadable or
without text, is still returned, with a note saying so. MuPDF's own messages are kept off stderr
while a file is read.

Context (what identifies a page but may not be on it; the chunker indexes it with each chunk, it is
never part of the text): the document's ``title``, from the PDF's metadata when that names the
document (not a file name such as ``HHS2022B`` or ``Microsoft Word - a.docx``), else the largest
line(s) of the first page with text; and each page's ``running_headers``, the lines repeated in the
top or bottom margin of many pages at the same height (:func:`running_headers`), page numbers and
the numbers that change from page to page left out. In ``"markdown"`` mode, which has no geometry,
the title is the first page's first ``#`` heading and the margins are each page's first and last line.

Memory: pages are read one at a time; until the whole document's styles are known each page
waits as packed lines (text plus a few numbers per line; its text dicts, drawings and spans are
dropped), and each is freed once rendered, so the Python heap peaks at about three times the
extracted text whatever the page count.

Not thread-safe: MuPDF's message switches and message store are process-wide.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from rag.errors import CorruptPdfError, DependencyMissingError, EncryptedPdfError, NoTextLayerError
from rag.models import ExtractedDocument, PageSpan

if TYPE_CHECKING:
    import pymupdf

PdfMode = Literal["text", "markdown"]

PAGE_SEPARATOR = "\n\n"
REPAIRED_NOTE = "repaired damaged PDF structure"

# A page counts as "without text" below MIN_PAGE_CHARS non-space characters, or below
# SCANNED_MAX_CHARS when images cover at least SCANNED_MIN_IMAGE_COVER of it.
MIN_PAGE_CHARS = 5
SCANNED_MAX_CHARS = 40
SCANNED_MIN_IMAGE_COVER = 0.5

# Heading detection, relative to the body size (the size covering the most characters).
HEADING_MIN_RATIO = 1.12
HEADING_MIN_DELTA = 1.0  # points
HEADING_MAX_CHARS = 120
HEADING_MAX_LINES = 3
BOLD_HEADING_MAX_CHARS = 80

# MuPDF messages that mean a page's content could not be read completely.
_DAMAGE_RE = re.compile(
    r"cannot load content stream|premature end|syntax error|object is not a stream|"
    r"page may not be correct|Length incorrect|cannot find object|unexpected end|"
    r"corrupt|invalid (?:xref|stream|object)",
    re.IGNORECASE,
)
_TEXT_FLAGS_NAMES = ("TEXT_PRESERVE_LIGATURES", "TEXT_PRESERVE_WHITESPACE", "TEXT_MEDIABOX_CLIP")
_FONT_BOLD = 16  # pymupdf.TEXT_FONT_BOLD
_FONT_MONO = 8  # pymupdf.TEXT_FONT_MONOSPACED
_MONO_NAME_RE = re.compile(r"mono|courier|consol|menlo|code|fixed", re.IGNORECASE)
_BOLD_NAME_RE = re.compile(r"bold|black|heavy|semibold|demi", re.IGNORECASE)
_LIST_ITEM_RE = re.compile(r"^\s*(?:[-•*·▪◦●○–]\s|\d{1,3}[.)、](?!\d)|[（(]\d{1,3}[）)]|[a-zA-Z][.)]\s)")
_HEADING_LIKE_RE = re.compile(r"^(#{1,6})(?=\s|$)")
_SENTENCE_END = tuple("。．.，,；;：:！!？?")
_FIRST_WORD_RE = re.compile(r"[^\s\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]+|.")
_SENTENCE_STOP = tuple("。．.！!？?")
_ASCII_ALNUM_RE = re.compile(r"[A-Za-z0-9]")
_TOC_LEADER_RE = re.compile(r"(?:\.\s?){4,}|…{2,}|·{4,}")  # "Introduction . . . . 1"


def extract_pdf(
    data: bytes,
    *,
    mode: PdfMode = "text",
    name: str = "",
    tables: bool = True,
) -> ExtractedDocument:
    """Extract the text of a PDF given as bytes.

    ``name`` (the file's path or name) only prefixes error messages. ``tables=False`` skips table
    detection in ``"text"`` mode (table cells then come out as plain lines).
    """
    if mode not in ("text", "markdown"):
        raise ValueError(f"unknown PDF extraction mode: {mode!r}")
    label = f"{name}: " if name else ""
    import pymupdf

    with _quiet_mupdf(pymupdf):
        doc = _open(pymupdf, data, label)
        try:
            margins: list[_MarginLine] = []
            first_lines: list[tuple[float, str]] = []
            page_title: str | None = None
            if mode == "markdown":
                pages, statuses = _markdown_pages(pymupdf, doc)
                margins = _text_margins(pages)
                page_title = _markdown_title(pages)
            else:
                pages, statuses = _text_pages(
                    pymupdf, doc, tables=tables, margins=margins, first_lines=first_lines
                )
            repaired = bool(doc.is_repaired)
            meta_title = _metadata_title(doc)
        finally:
            doc.close()
    out = _assemble(pages, statuses, repaired=repaired, label=label)
    out.running_headers = running_headers(margins, sum(1 for st in statuses if st.has_text))
    out.title = meta_title or page_title or _first_page_title(first_lines)
    return out


# --- opening and diagnostics ---------------------------------------------------------------------


@contextmanager
def _quiet_mupdf(pymupdf: Any) -> Iterator[None]:
    """Keep MuPDF's errors and warnings off stderr; they are read from its message store instead."""
    tools = pymupdf.TOOLS
    old_errors = tools.mupdf_display_errors()
    old_warnings = tools.mupdf_display_warnings()
    tools.mupdf_display_errors(False)
    tools.mupdf_display_warnings(False)
    tools.reset_mupdf_warnings()
    try:
        yield
    finally:
        tools.reset_mupdf_warnings()
        tools.mupdf_display_errors(old_errors)
        tools.mupdf_display_warnings(old_warnings)


def _open(pymupdf: Any, data: bytes, label: str) -> pymupdf.Document:
    if not data:
        raise CorruptPdfError(f"{label}empty file")
    if b"%PDF" not in data[:1024]:
        raise CorruptPdfError(f"{label}not a PDF (no %PDF header)")
    try:
        doc = pymupdf.open(stream=data, filetype="pdf")
    except Exception as exc:  # MuPDF reports every parse failure as some RuntimeError subclass
        raise CorruptPdfError(f"{label}cannot read PDF ({_short(exc)})") from exc
    if doc.needs_pass:
        doc.close()
        raise EncryptedPdfError(f"{label}PDF is encrypted and needs a password")
    if doc.page_count == 0:
        doc.close()
        raise CorruptPdfError(f"{label}PDF has no pages (damaged or truncated?)")
    return doc


def _visible(text: str) -> int:
    """Number of non-whitespace characters."""
    return len("".join(text.split()))


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return (msg[0] if msg else type(exc).__name__)[:120]


def _take_warnings(pymupdf: Any) -> str:
    return str(pymupdf.TOOLS.mupdf_warnings(reset=1))


@dataclass
class _PageStatus:
    chars: int = 0  # non-space characters in the page's text layer
    damaged: bool = False  # MuPDF reported broken content while reading the page
    image_cover: float = 0.0  # share of the page under images (measured on pages with little text)
    table_error: bool = False  # table detection failed; the cells stayed ordinary lines

    @property
    def has_text(self) -> bool:
        if self.chars < MIN_PAGE_CHARS:
            return False
        # A scan with a stamp or a scanner app's watermark in its text layer is still a scan.
        return self.chars >= SCANNED_MAX_CHARS or self.image_cover < SCANNED_MIN_IMAGE_COVER


def _classify(page: pymupdf.Page, status: _PageStatus, warnings: str) -> None:
    status.damaged = status.damaged or bool(_DAMAGE_RE.search(warnings))
    if status.chars < SCANNED_MAX_CHARS:
        area = abs(page.rect)
        covered = 0.0
        try:
            for info in page.get_image_info():
                covered += abs(page.rect & info["bbox"])
        except Exception:
            return
        status.image_cover = covered / area if area > 0 else 0.0


def _text_flags(pymupdf: Any) -> int:
    flags = 0
    for flag_name in _TEXT_FLAGS_NAMES:
        flags |= int(getattr(pymupdf, flag_name, 0))
    return flags


# --- assembling pages into one document -----------------------------------------------------------


def _assemble(
    pages: Sequence[str], statuses: Sequence[_PageStatus], *, repaired: bool, label: str
) -> ExtractedDocument:
    n = len(pages)
    damaged = [i + 1 for i, s in enumerate(statuses) if s.damaged and not s.has_text]
    partial = [i + 1 for i, s in enumerate(statuses) if s.damaged and s.has_text]
    no_text = [i + 1 for i, s in enumerate(statuses) if not s.has_text and not s.damaged]
    if repaired:
        # In a repaired file a page with neither text nor images was more likely lost than blank.
        lost = [p for p in no_text if statuses[p - 1].image_cover == 0.0]
        damaged = sorted(damaged + lost)
        no_text = [p for p in no_text if p not in lost]
    if not any(s.has_text for s in statuses):
        if damaged:
            raise CorruptPdfError(
                f"{label}damaged or truncated PDF: no readable text on any of its {n} page(s)"
            )
        raise NoTextLayerError(f"{label}no text layer on {n} page{'s' if n > 1 else ''} (scanned?)")

    notes: list[str] = []
    if repaired:
        notes.append(REPAIRED_NOTE)
    if damaged:
        notes.append(f"no readable text on damaged {_pages_phrase(damaged)}")
    if partial:
        notes.append(f"text may be incomplete on damaged {_pages_phrase(partial)}")
    if no_text:
        notes.append(f"no text layer on {_pages_phrase(no_text)} (scanned or blank?)")
    table_errors = [i + 1 for i, s in enumerate(statuses) if s.table_error]
    if table_errors:
        notes.append(f"table detection failed on {_pages_phrase(table_errors)}")

    spans: list[PageSpan] = []
    pos = 0
    for i, page_text in enumerate(pages):
        if i:
            pos += len(PAGE_SEPARATOR)
        spans.append(PageSpan(page=i + 1, start=pos, end=pos + len(page_text)))
        pos += len(page_text)
    return ExtractedDocument(text=PAGE_SEPARATOR.join(pages), format="pdf", pages=spans, notes=notes)


def _pages_phrase(pages: Sequence[int]) -> str:
    """[1, 2, 3, 7] -> "pages 1-3, 7"."""
    ranges: list[str] = []
    start = prev = pages[0]
    for p in [*pages[1:], None]:
        if p is not None and p == prev + 1:
            prev = p
            continue
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
        if p is not None:
            start = prev = p
    return ("page " if len(pages) == 1 else "pages ") + ", ".join(ranges)


# --- "markdown" mode -----------------------------------------------------------------------------


def _markdown_pages(pymupdf: Any, doc: pymupdf.Document) -> tuple[list[str], list[_PageStatus]]:
    try:
        import pymupdf4llm
    except ImportError as exc:
        raise DependencyMissingError(
            "PDF mode 'markdown' needs pymupdf4llm", hint="pip install pymupdf4llm, or use mode 'text'"
        ) from exc

    flags = _text_flags(pymupdf)
    statuses: list[_PageStatus] = []
    readable: list[int] = []
    for i in range(doc.page_count):
        status = _PageStatus()
        try:
            page = doc.load_page(i)
            text = page.get_textpage(flags=flags).extractText()
            status.chars = _visible(text)
            _classify(page, status, _take_warnings(pymupdf))
            readable.append(i)
        except Exception:
            status.damaged = True
            _take_warnings(pymupdf)
        statuses.append(status)

    pages = [""] * doc.page_count
    pymupdf4llm.use_layout(False)
    if readable:
        chunks = pymupdf4llm.to_markdown(doc, pages=readable, page_chunks=True, show_progress=False)
        for i, chunk in zip(readable, chunks, strict=True):
            pages[i] = str(chunk["text"]).strip()
    _take_warnings(pymupdf)
    return pages, statuses


# --- "text" mode: lines with style ---------------------------------------------------------------


@dataclass(slots=True)
class _Line:
    text: str
    chars: int  # non-space characters
    size: float
    bold: bool
    mono: bool
    x0: float
    y0: float
    x1: float
    y1: float
    # (x0, y0, x1, y1, text, (block, line, span) index in the page's text dict); kept only until
    # the page's tables are built, then dropped
    spans: Sequence[tuple[float, float, float, float, str, tuple[int, int, int]]] = ()

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


@dataclass
class _Table:
    bbox: tuple[float, float, float, float]
    markdown: str
    emitted: bool = False

    def holds(self, line: _Line) -> bool:
        cx, cy = line.center
        x0, y0, x1, y1 = self.bbox
        return x0 - 1 <= cx <= x1 + 1 and y0 - 1 <= cy <= y1 + 1


@dataclass
class _Page:
    """One page between reading and rendering. Its lines wait packed into flat arrays (a few
    bytes per line besides the text) while the document's styles are worked out from all pages,
    so a long PDF keeps little more than its text; :meth:`blocks` rebuilds one page's lines."""

    texts: list[str] = field(default_factory=list)
    numbers: array[float] = field(default_factory=lambda: array("d"))  # x0, y0, x1, y1, size
    flags: array[int] = field(default_factory=lambda: array("q"))  # chars << 2 | mono << 1 | bold
    block_lengths: array[int] = field(default_factory=lambda: array("q"))
    tables: list[_Table] = field(default_factory=list)

    @classmethod
    def pack(cls, blocks: list[list[_Line]], tables: list[_Table]) -> _Page:
        page = cls(tables=tables)
        for block in blocks:
            page.block_lengths.append(len(block))
            for ln in block:
                page.texts.append(ln.text)
                page.numbers.extend((ln.x0, ln.y0, ln.x1, ln.y1, ln.size))
                page.flags.append(ln.chars << 2 | ln.mono << 1 | ln.bold)
        return page

    def blocks(self) -> list[list[_Line]]:
        out: list[list[_Line]] = []
        i = 0
        for length in self.block_lengths:
            block = []
            for k in range(i, i + length):
                x0, y0, x1, y1, size = self.numbers[5 * k : 5 * k + 5]
                f = self.flags[k]
                block.append(
                    _Line(
                        text=self.texts[k],
                        chars=f >> 2,
                        size=size,
                        bold=bool(f & 1),
                        mono=bool(f & 2),
                        x0=x0,
                        y0=y0,
                        x1=x1,
                        y1=y1,
                    )
                )
            out.append(block)
            i += length
        return out


def _text_pages(
    pymupdf: Any,
    doc: pymupdf.Document,
    *,
    tables: bool,
    margins: list[_MarginLine] | None = None,
    first_lines: list[tuple[float, str]] | None = None,
) -> tuple[list[str], list[_PageStatus]]:
    """Rendered pages and their statuses. ``margins`` receives the lines in each page's top and
    bottom margin, ``first_lines`` the (size, text) lines of the first page with text."""
    flags = _text_flags(pymupdf)
    parsed: list[_Page] = []
    statuses: list[_PageStatus] = []
    sizes: Counter[float] = Counter()
    candidates: set[float] = set()  # sizes of heading-shaped runs
    for i in range(doc.page_count):
        status = _PageStatus()
        blocks: list[list[_Line]] = []
        page_tables: list[_Table] = []
        try:
            page = doc.load_page(i)
            textpage = page.get_textpage(flags=flags)
            blocks = _read_lines(textpage.extractDICT())
            if tables:
                try:
                    page_tables = _find_tables(page, blocks, _RawChars(textpage))
                except Exception:  # the table module failing must not cost the page its text
                    status.table_error = True
            for block in blocks:
                for line in block:
                    status.chars += line.chars
                    sizes[line.size] += line.chars
                for run in _runs(block):
                    if run[0].size not in candidates and _heading_shaped(run):
                        candidates.add(run[0].size)
            _classify(page, status, _take_warnings(pymupdf))
            if margins is not None:
                margins.extend(_margin_lines(i + 1, blocks, page.rect.height))
            if first_lines is not None and not first_lines and status.has_text and i < TITLE_MAX_PAGE:
                first_lines.extend((ln.size, ln.text) for block in blocks for ln in block)
        except Exception:
            status.damaged = True
            _take_warnings(pymupdf)
        parsed.append(_Page.pack(blocks, page_tables))  # the page's dicts and spans go here
        statuses.append(status)

    styles = _Styles.from_sizes(sizes, candidates)
    rendered = []
    for i, page_data in enumerate(parsed):
        rendered.append(_render_page(page_data, styles))
        parsed[i] = _Page()  # rendered: its lines are no longer needed
    return rendered, statuses


@functools.lru_cache(maxsize=1024)
def _font_style(font: str) -> tuple[bool, bool]:
    """Whether a font's name says bold, and whether it says monospaced (a document uses few fonts)."""
    return bool(_BOLD_NAME_RE.search(font)), bool(_MONO_NAME_RE.search(font))


def _read_lines(page_dict: dict[str, Any]) -> list[list[_Line]]:
    blocks: list[list[_Line]] = []
    for b, block in enumerate(page_dict.get("blocks", [])):
        if block.get("type", 0) != 0:
            continue
        lines: list[_Line] = []
        for ln, line in enumerate(block.get("lines", [])):
            spans = line.get("spans", [])
            text = "".join(s["text"] for s in spans)
            if not text.strip():
                continue
            size_weight: Counter[float] = Counter()
            bold = mono = 0
            total = 0
            latin_outside_mono = False
            for s in spans:
                n = _visible(s["text"])
                if not n:
                    continue
                total += n
                size_weight[round(float(s["size"]) * 2) / 2] += n
                font = str(s.get("font", ""))
                named_bold, named_mono = _font_style(font)
                if int(s.get("flags", 0)) & _FONT_BOLD or named_bold:
                    bold += n
                if int(s.get("flags", 0)) & _FONT_MONO or named_mono:
                    mono += n
                elif _ASCII_ALNUM_RE.search(s["text"]):
                    latin_outside_mono = True
            x0, y0, x1, y1 = line["bbox"]
            lines.append(
                _Line(
                    text=text.rstrip(),
                    chars=total,
                    size=size_weight.most_common(1)[0][0],
                    bold=bold == total,
                    mono=mono * 2 >= total and not latin_outside_mono,
                    x0=x0,
                    y0=y0,
                    x1=x1,
                    y1=y1,
                    spans=[(*s["bbox"], s["text"], (b, ln, k)) for k, s in enumerate(spans)],
                )
            )
        if lines:
            blocks.append(lines)
    return blocks


# --- "text" mode: tables -------------------------------------------------------------------------
#
# Ruled tables are found from the page's vector paths, with the text already read for the page:
# rule pieces -> rules (snapped and joined) -> crossing points -> cells -> grids of cells -> the
# text of each cell taken from the page's spans. A page pays for one ``get_cdrawings`` call and,
# when its rules can hold a grid, some arithmetic on the rules; PyMuPDF's ``find_tables`` (which
# builds a Python list of every character of the area, per call) runs only on rotated pages.

TABLE_SNAP = 3.0  # rules closer than this (points) are one rule
TABLE_JOIN = 3.0  # collinear pieces with a gap up to this are one rule
TABLE_MIN_RULE = 3.0  # shorter pieces are not rules
TABLE_CROSS = 3.0  # a rule ending this close to another still meets it
TABLE_MAX_PIECES = 6000  # more rule pieces than this on a page: a drawing, not a table

_Rule = tuple[float, float, float]  # position across, start along, end along
_Cell = tuple[float, float, float, float]


def _rule_pieces(
    drawings: Sequence[dict[str, Any]], width: float, height: float
) -> tuple[list[_Rule], list[_Rule]]:
    """Horizontal ``(y, x0, x1)`` and vertical ``(x, y0, y1)`` pieces of ruling in a page's
    vector paths: straight lines, thin rectangles (rules drawn as fills) and the sides of other
    rectangles and quads (cell borders, cell backgrounds), cut to the page."""
    hs: list[_Rule] = []
    vs: list[_Rule] = []

    def add(ax: float, ay: float, bx: float, by: float) -> None:
        if ay == by:
            x0, x1 = max(min(ax, bx), 0.0), min(max(ax, bx), width)
            if x1 > x0 and 0 <= ay <= height:
                hs.append((ay, x0, x1))
        elif abs(ax - bx) <= TABLE_SNAP:
            y0, y1 = max(min(ay, by), 0.0), min(max(ay, by), height)
            x = min(ax, bx)
            if y1 > y0 and 0 <= x <= width:
                vs.append((x, y0, y1))

    for path in drawings:
        items = path.get("items", ())
        for item in items:
            kind = item[0]
            if kind == "l":
                (ax, ay), (bx, by) = item[1], item[2]
                add(ax, ay, bx, by)
            elif kind == "re":
                ax, ay, bx, by = item[1]
                x0, x1 = min(ax, bx), max(ax, bx)
                y0, y1 = min(ay, by), max(ay, by)
                w, h = x1 - x0, y1 - y0
                if w <= TABLE_MIN_RULE and w < h:  # a vertical rule drawn as a thin rectangle
                    add((x0 + x1) / 2, y0, (x0 + x1) / 2, y1)
                elif h <= TABLE_MIN_RULE and h < w:
                    add(x0, (y0 + y1) / 2, x1, (y0 + y1) / 2)
                elif w > 0 or h > 0:
                    add(x0, y0, x0, y1)
                    add(x0, y1, x1, y1)
                    add(x1, y1, x1, y0)
                    add(x1, y0, x0, y0)
            elif kind == "qu":
                ul, ur, ll, lr = item[1]
                for (ax, ay), (bx, by) in ((ul, ll), (ll, lr), (lr, ur), (ur, ul)):
                    add(ax, ay, bx, by)
        if path.get("closePath") and items and items[0][0] == "l" and items[-1][0] == "l":
            (ax, ay), (bx, by) = items[-1][2], items[0][1]
            add(ax, ay, bx, by)
    return hs, vs


def _ruled_regions(hs: list[_Rule], vs: list[_Rule]) -> list[_Cell]:
    """Areas where at least three horizontal and three vertical rules touch one another (within
    2 points): the only places a ruled grid of two rows and two columns can be."""
    tol = 2.0
    pieces = [(x0, y, x1, y, True) for y, x0, x1 in hs if x1 - x0 >= TABLE_MIN_RULE]
    pieces += [(x, y0, x, y1, False) for x, y0, y1 in vs if y1 - y0 >= TABLE_MIN_RULE]
    if sum(p[4] for p in pieces) < 3 or sum(not p[4] for p in pieces) < 3:
        return []
    clusters: list[list[float]] = []  # x0, y0, x1, y1, n_horizontal, n_vertical
    done: list[list[float]] = []  # clusters that end above every piece still to come
    for x0, y0, x1, y1, horizontal in sorted(pieces, key=lambda s: (s[1], s[0])):
        merged = [x0, y0, x1, y1, float(horizontal), float(not horizontal)]
        keep: list[list[float]] = []
        for c in clusters:
            if c[3] + tol < y0:
                done.append(c)
            elif x0 <= c[2] + tol and c[0] - tol <= x1 and c[1] - tol <= y1:
                merged = [
                    min(merged[0], c[0]),
                    min(merged[1], c[1]),
                    max(merged[2], c[2]),
                    max(merged[3], c[3]),
                    merged[4] + c[4],
                    merged[5] + c[5],
                ]
            else:
                keep.append(c)
        keep.append(merged)
        clusters = keep
    return [
        (c[0] - tol, c[1] - tol, c[2] + tol, c[3] + tol) for c in done + clusters if c[4] >= 3 and c[5] >= 3
    ]


def _clip_pieces(pieces: list[_Rule], regions: list[_Cell], *, horizontal: bool) -> list[_Rule]:
    """The parts of ``pieces`` inside ``regions``."""
    out: list[_Rule] = []
    for pos, a, b in pieces:
        for x0, y0, x1, y1 in regions:
            lo, hi, across_lo, across_hi = (x0, x1, y0, y1) if horizontal else (y0, y1, x0, x1)
            if across_lo <= pos <= across_hi and a <= hi and b >= lo:
                out.append((pos, max(a, lo), min(b, hi)))
    return out


def _outline_pieces(
    drawings: Sequence[dict[str, Any]], blocks: list[list[_Line]], hs: list[_Rule], vs: list[_Rule]
) -> None:
    """Add the outline of each group of touching vector paths that holds text to ``hs`` and
    ``vs``: a table drawn as shaded cells, or with rules between its rows only, is closed by
    the outline of its shading (as PyMuPDF's own table finder does)."""
    rects = sorted((tuple(p["rect"]) for p in drawings), key=lambda r: (r[3], r[0]))
    snap = TABLE_SNAP
    outlines: list[list[float]] = []
    while rects:
        box = list(rects.pop(0))
        grown = True
        while grown:
            grown = False
            keep = []
            for r in rects:
                if (
                    r[0] <= box[2] + snap
                    and box[0] <= r[2] + snap
                    and r[1] <= box[3] + snap
                    and box[1] <= r[3] + snap
                ):
                    box = [min(box[0], r[0]), min(box[1], r[1]), max(box[2], r[2]), max(box[3], r[3])]
                    grown = True
                else:
                    keep.append(r)
            rects = keep
        outlines.append(box)
    spans = [s for block in blocks for line in block for s in line.spans if s[4].strip()]
    for x0, y0, x1, y1 in outlines:
        if x1 - x0 < TABLE_MIN_RULE or y1 - y0 < TABLE_MIN_RULE:
            continue
        if any(x0 <= s[0] and s[2] <= x1 and y0 <= s[1] and s[3] <= y1 for s in spans):
            hs += [(y0, x0, x1), (y1, x0, x1)]
            vs += [(x0, y0, y1), (x1, y0, y1)]


def _merge_rules(pieces: list[_Rule]) -> list[_Rule]:
    """Pieces within :data:`TABLE_SNAP` of each other across move to their mean position; pieces
    on one line with gaps up to :data:`TABLE_JOIN` become one rule; short rules are dropped."""
    pieces = sorted(pieces)
    snapped: list[_Rule] = []
    group: list[_Rule] = []
    for piece in [*pieces, None]:
        if group and (piece is None or piece[0] > group[-1][0] + TABLE_SNAP):
            pos = sum(p[0] for p in group) / len(group)
            snapped += [(pos, p[1], p[2]) for p in group]
            group = []
        if piece is not None:
            group.append(piece)
    rules: list[_Rule] = []
    for pos, same_line in itertools.groupby(sorted(snapped), key=lambda r: r[0]):
        start = end = None
        for _, a, b in same_line:  # sorted by start
            if start is not None and end is not None and a <= end + TABLE_JOIN:
                end = max(end, b)
                continue
            if start is not None and end is not None and end - start >= TABLE_MIN_RULE:
                rules.append((pos, start, end))
            start, end = a, b
        if start is not None and end is not None and end - start >= TABLE_MIN_RULE:
            rules.append((pos, start, end))
    return rules


def _grids(hs: list[_Rule], vs: list[_Rule]) -> list[list[list[_Cell | None]]]:
    """Tables formed by horizontal rules ``hs`` and vertical rules ``vs``, each as rows of cells
    (one slot per distinct left edge of a cell; ``None`` where a cell spans or is missing).

    A cell is the smallest rectangle whose four corners are crossings joined by rules along its
    sides; cells sharing a corner belong to one table; a table needs two rows and two columns.
    """
    # Crossing points, each with the rules through it.
    through: dict[tuple[float, float], tuple[set[int], set[int]]] = {}
    vs_sorted = sorted(range(len(vs)), key=lambda i: vs[i][0])
    v_xs = [vs[i][0] for i in vs_sorted]
    for hi, (y, x0, x1) in enumerate(hs):
        lo = bisect.bisect_left(v_xs, x0 - TABLE_CROSS)
        hi_end = bisect.bisect_right(v_xs, x1 + TABLE_CROSS)
        for vi in vs_sorted[lo:hi_end]:
            x, y0, y1 = vs[vi]
            if y0 - TABLE_CROSS <= y <= y1 + TABLE_CROSS:
                h_set, v_set = through.setdefault((x, y), (set(), set()))
                h_set.add(hi)
                v_set.add(vi)
    if len(through) < 6:  # fewer crossings than two cells sharing a corner have
        return []
    columns: dict[float, list[float]] = {}  # x -> ys of crossings on it
    rows: dict[float, list[float]] = {}  # y -> xs of crossings on it
    for x, y in sorted(through):
        columns.setdefault(x, []).append(y)
        rows.setdefault(y, []).append(x)
    for xs in rows.values():
        xs.sort()

    def joined_v(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return not through[a][1].isdisjoint(through[b][1])

    def joined_h(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return not through[a][0].isdisjoint(through[b][0])

    cells: list[_Cell] = []
    for x, ys in columns.items():
        row_xs_cache = rows
        for k, y in enumerate(ys):
            top_left = (x, y)
            right = [(rx, y) for rx in row_xs_cache[y] if rx > x]
            found = False
            for by in ys[k + 1 :]:
                below = (x, by)
                if not joined_v(top_left, below):
                    continue
                for top_right in right:
                    if not joined_h(top_left, top_right):
                        continue
                    bottom_right = (top_right[0], by)
                    if (
                        bottom_right in through
                        and joined_h(bottom_right, below)
                        and joined_v(bottom_right, top_right)
                    ):
                        cells.append((x, y, top_right[0], by))
                        found = True
                        break
                if found:
                    break

    # Cells sharing a corner form one table.
    parent = list(range(len(cells)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    corner_owner: dict[tuple[float, float], int] = {}
    for i, (x0, y0, x1, y1) in enumerate(cells):
        for corner in ((x0, y0), (x0, y1), (x1, y0), (x1, y1)):
            j = corner_owner.setdefault(corner, i)
            if j != i:
                parent[find(i)] = find(j)
    groups: dict[int, list[_Cell]] = {}
    for i, cell in enumerate(cells):
        groups.setdefault(find(i), []).append(cell)

    tables: list[list[list[_Cell | None]]] = []
    for group in sorted(groups.values(), key=lambda g: min((c[1], c[0]) for c in g)):
        lefts = sorted({c[0] for c in group})
        if len(lefts) < 2 or len({c[2] for c in group}) < 2:
            continue
        grid: list[list[_Cell | None]] = []
        for _, row_cells in itertools.groupby(sorted(group, key=lambda c: (c[1], c[0])), key=lambda c: c[1]):
            by_left = {c[0]: c for c in row_cells}
            grid.append([by_left.get(x) for x in lefts])
        if len(grid) >= 2:
            tables.append(grid)
    return tables


def _find_tables(page: pymupdf.Page, blocks: list[list[_Line]], raw: _RawChars) -> list[_Table]:
    """The ruled tables of ``page`` as markdown, their cells' text taken from ``blocks``."""
    # Drawings and text both come in unrotated page coordinates.
    width, height = page.rect.width, page.rect.height
    if page.rotation in (90, 270):
        width, height = height, width
    drawings = page.get_cdrawings()
    hs, vs = _rule_pieces(drawings, width, height)
    # Pre-filter: a grid of two rows and two columns has three rules each way, touching.
    if len(hs) < 3 or len(vs) < 3 or len(hs) + len(vs) > TABLE_MAX_PIECES:
        return []
    regions = _ruled_regions(hs, vs)
    if not regions:
        return []
    _outline_pieces(drawings, blocks, hs, vs)
    h_rules = _merge_rules(_clip_pieces(hs, regions, horizontal=True))
    v_rules = _merge_rules(_clip_pieces(vs, regions, horizontal=False))
    if len(h_rules) < 3 or len(v_rules) < 3:
        return []
    found: list[_Table] = []
    for grid in _grids(h_rules, v_rules):
        cells = [c for row in grid for c in row if c is not None]
        bbox = (
            min(c[0] for c in cells),
            min(c[1] for c in cells),
            max(c[2] for c in cells),
            max(c[3] for c in cells),
        )
        markdown = _grid_markdown(grid, _cell_lines(grid, bbox, blocks, raw))
        if markdown:
            found.append(_Table(bbox=bbox, markdown=markdown))
    return found


class _RawChars:
    """The characters of one page's spans, read from its text page only when first needed."""

    def __init__(self, textpage: Any) -> None:
        self.textpage = textpage
        self.blocks: list[dict[str, Any]] | None = None

    def chars(self, key: tuple[int, int, int]) -> list[dict[str, Any]]:
        if self.blocks is None:
            self.blocks = self.textpage.extractRAWDICT()["blocks"]
        b, ln, s = key
        return list(self.blocks[b]["lines"][ln]["spans"][s]["chars"])


def _cell_lines(
    grid: list[list[_Cell | None]],
    bbox: _Cell,
    blocks: list[list[_Line]],
    raw: _RawChars,
) -> dict[tuple[int, int], list[str]]:
    """The text of each cell, one string per text line: each character goes to the cell holding
    its centre. A span that fits inside one cell goes there whole; only a span that crosses a
    cell border is read character by character."""
    x0, y0, x1, y1 = bbox
    cell_lines: dict[tuple[int, int], list[str]] = {}
    for block in blocks:
        for line in block:
            if line.x1 < x0 or line.x0 > x1 or line.y1 < y0 or line.y0 > y1:
                continue
            parts: dict[tuple[int, int], list[str]] = {}
            for sx0, sy0, sx1, sy1, text, key in line.spans:
                cy = (sy0 + sy1) / 2
                where = _cell_at(grid, (sx0 + sx1) / 2, cy)
                if where is not None:
                    cell = grid[where[0]][where[1]]
                    assert cell is not None
                    if cell[0] <= sx0 and sx1 <= cell[2]:
                        parts.setdefault(where, []).append(text)
                        continue
                for ch in raw.chars(key):
                    cx0, cy0, cx1, cy1 = ch["bbox"]
                    at = _cell_at(grid, (cx0 + cx1) / 2, (cy0 + cy1) / 2)
                    if at is not None:
                        parts.setdefault(at, []).append(ch["c"])
            for where, texts in parts.items():
                cell_lines.setdefault(where, []).append("".join(texts))
    return cell_lines


def _grid_markdown(
    grid: Sequence[Sequence[_Cell | None]], cell_lines: dict[tuple[int, int], list[str]]
) -> str:
    """A GitHub markdown table; the first row is the header. Empty unless two cells hold text."""
    if len(grid) < 2 or max(len(r) for r in grid) < 2:
        return ""
    rows = [
        [_join_lines(cell_lines.get((r, c), [])).replace("|", "\\|") for c in range(len(row))]
        for r, row in enumerate(grid)
    ]
    if sum(1 for row in rows for cell in row if cell) < 2:  # a framed box of text, not a table
        return ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    out = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * width]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def _find_tables_mupdf(page: pymupdf.Page, flags: int) -> list[_Table]:
    """PyMuPDF's own table finder (``lines`` strategy), the cells' text read from the table
    area: what ``text`` mode used before it read tables from the rules itself, kept as the
    reference its tables are checked against."""
    found: list[_Table] = []
    try:
        finder = page.find_tables(strategy="lines", use_layout=False)
    except TypeError:  # PyMuPDF before the layout analyser existed
        finder = page.find_tables(strategy="lines")
    for table in finder.tables:
        grid: list[list[_Cell | None]] = [list(row.cells) for row in table.rows]
        if len(grid) < 2 or max(len(r) for r in grid) < 2:
            continue
        cell_lines: dict[tuple[int, int], list[str]] = {}
        raw = page.get_text("rawdict", clip=table.bbox, flags=flags)
        for block in raw.get("blocks", []):
            for line in block.get("lines", []):
                parts: dict[tuple[int, int], list[str]] = {}
                for span in line.get("spans", []):
                    for ch in span.get("chars", []):
                        x0, y0, x1, y1 = ch["bbox"]
                        key = _cell_at(grid, (x0 + x1) / 2, (y0 + y1) / 2)
                        if key is not None:
                            parts.setdefault(key, []).append(ch["c"])
                for key, chars in parts.items():
                    cell_lines.setdefault(key, []).append("".join(chars))
        markdown = _grid_markdown(grid, cell_lines)
        if markdown:
            found.append(_Table(bbox=tuple(table.bbox), markdown=markdown))
    return found


def _cell_at(grid: Sequence[Sequence[_Cell | None]], x: float, y: float) -> tuple[int, int] | None:
    for r, row in enumerate(grid):
        for c, cell in enumerate(row):
            if cell is not None and cell[0] <= x <= cell[2] and cell[1] <= y <= cell[3]:
                return r, c
    return None


# --- "text" mode: styles and rendering -----------------------------------------------------------


@dataclass
class _Styles:
    body: float  # the size covering the most characters
    threshold: float  # smallest heading size
    levels: dict[float, int]  # heading font size -> markdown level
    bold_level: int  # level for bold body-size headings

    @classmethod
    def from_sizes(cls, sizes: Counter[float], candidates: set[float]) -> _Styles:
        """``sizes``: characters per font size; ``candidates``: sizes of runs that would be
        headings if their size were large enough (see :func:`_heading_shaped`)."""
        body = sizes.most_common(1)[0][0] if sizes else 0.0
        threshold = max(body * HEADING_MIN_RATIO, body + HEADING_MIN_DELTA)
        heading_sizes = {size for size in candidates if size >= threshold}
        ordered = sorted(heading_sizes, reverse=True)
        levels = {size: min(rank + 1, 6) for rank, size in enumerate(ordered)}
        return cls(body=body, threshold=threshold, levels=levels, bold_level=min(len(ordered) + 1, 6))


def _runs(block: list[_Line]) -> Iterator[list[_Line]]:
    """Consecutive lines of a block that share size and monospacing."""
    run: list[_Line] = []
    for line in block:
        if run and (line.size != run[0].size or line.mono != run[0].mono):
            yield run
            run = []
        run.append(line)
    if run:
        yield run


def _is_size_heading(run: list[_Line], threshold: float) -> bool:
    return run[0].size >= threshold and _heading_shaped(run)


def _heading_shaped(run: list[_Line]) -> bool:
    """Everything a size heading needs except its size: short, not code, has letters, not a
    table-of-contents line."""
    text = _join_lines([ln.text for ln in run])
    return (
        not run[0].mono
        and len(run) <= HEADING_MAX_LINES
        and len(text) <= HEADING_MAX_CHARS
        and any(ch.isalpha() for ch in text)
        and not _TOC_LEADER_RE.search(text)
    )


def _is_bold_heading(line: _Line, block: list[_Line], index: int) -> bool:
    """A short bold line standing on its own: first in its block (or after a hard break), last
    in it (or followed by a hard break), not ending like a sentence or a label ("注意：")."""
    text = line.text.strip()
    if not line.bold or line.mono or len(text) > BOLD_HEADING_MAX_CHARS or text.endswith(_SENTENCE_END):
        return False
    if not any(ch.isalpha() for ch in text) or _TOC_LEADER_RE.search(text):
        return False
    right = max(ln.x1 for ln in block)
    before_ok = index == 0 or _hard_break(block[index - 1], line, right)
    after_ok = index == len(block) - 1 or _hard_break(line, block[index + 1], right)
    return before_ok and after_ok


def _hard_break(line: _Line, nxt: _Line, right: float) -> bool:
    """Whether the break between ``line`` and ``nxt`` is a real one, not paragraph wrapping:
    ``nxt`` starts a list item, or the room left at the end of ``line`` would have held the first
    word of ``nxt`` (a wrapping line breaker would have put it there), or ``line`` ends a
    sentence and stops clearly short of the right edge."""
    if _LIST_ITEM_RE.match(nxt.text):
        return True
    room = right - line.x1
    if line.text.rstrip().endswith(_SENTENCE_STOP) and room > 2 * line.size:
        return True
    word = _FIRST_WORD_RE.match(nxt.text.lstrip())
    first = word.group(0) if word else nxt.text.lstrip()[:1]
    # Rough advance widths: 1 em for CJK / full-width characters, 0.6 em otherwise.
    needed = sum(1.0 if _is_cjk(ch) else 0.6 for ch in first) * nxt.size
    return room > needed + line.size


def _render_page(page: _Page, styles: _Styles) -> str:
    parts: list[str] = []
    code: list[_Line] = []

    def flush_code() -> None:
        if code:
            parts.append(_code_block(code))
            code.clear()

    for block in page.blocks():
        kept: list[_Line] = []
        for line in block:
            table = next((t for t in page.tables if t.holds(line)), None)
            if table is None:
                kept.append(line)
                continue
            if kept:
                _render_block(kept, styles, parts, code, flush_code)
                kept = []
            if not table.emitted:
                flush_code()
                parts.append(table.markdown)
                table.emitted = True
        if kept:
            _render_block(kept, styles, parts, code, flush_code)
    flush_code()
    parts += [t.markdown for t in page.tables if not t.emitted]
    return "\n\n".join(p for p in parts if p).strip()


def _render_block(
    block: list[_Line],
    styles: _Styles,
    parts: list[str],
    code: list[_Line],
    flush_code: Any,
) -> None:
    for run in _runs(block):
        if run[0].mono:
            code.extend(run)
            continue
        flush_code()
        if run[0].size in styles.levels and _is_size_heading(run, styles.threshold):
            heading = _join_lines([ln.text for ln in run])
            parts.append("#" * styles.levels[run[0].size] + " " + heading)
            continue
        paragraph: list[_Line] = []
        first = next(i for i, ln in enumerate(block) if ln is run[0])
        for index, line in enumerate(run, start=first):
            if _is_bold_heading(line, block, index):
                if paragraph:
                    parts.append(_paragraph(paragraph, block))
                    paragraph = []
                parts.append("#" * styles.bold_level + " " + line.text.strip())
            else:
                paragraph.append(line)
        if paragraph:
            parts.append(_paragraph(paragraph, block))


def _paragraph(lines: list[_Line], block: list[_Line]) -> str:
    right = max(ln.x1 for ln in block)
    out = [lines[0].text.strip()]
    for prev, line in itertools.pairwise(lines):
        if _hard_break(prev, line, right):
            out.append("\n" + line.text.strip())
        else:
            out.append(_joiner(out[-1], line.text.strip()) + line.text.strip())
    text = "".join(out)
    # A line of prose that starts with "#" must not turn into a markdown heading.
    return "\n".join(_HEADING_LIKE_RE.sub(r"\\\1", ln) for ln in text.split("\n"))


def _code_block(lines: list[_Line]) -> str:
    left = min(ln.x0 for ln in lines)
    body = []
    for ln in lines:
        char_width = 0.6 * ln.size  # monospaced advance is about 0.6 em
        indent = max(0, round((ln.x0 - left) / char_width)) if char_width else 0
        body.append(" " * indent + ln.text)
    text = "\n".join(body)
    fence = "~~~" if "```" in text else "```"
    return f"{fence}\n{text}\n{fence}"


# --- document context: title and running headers ------------------------------------------------

TITLE_MAX_PAGE = 3  # the title is looked for on the first page with text among the first three
TITLE_MAX_CHARS = 160
MARGIN_BAND = 0.12  # top and bottom share of the page height where running headers sit
MARGIN_LINES = 3  # lines looked at in each band, nearest the edge first
MARGIN_Y_TOLERANCE = 4.0  # points: a running header sits at the same height on every page
HEADER_MIN_PAGES = 3
HEADER_MIN_SHARE = 0.05  # of the pages with text
HEADER_MAX_CHARS = 120

_FILE_NAME_RE = re.compile(r"\.(?:docx?|pdf|indd|pptx?|xlsx?|rtf|odt|tex|txt|md)\s*$", re.IGNORECASE)
_APP_TITLE_RE = re.compile(
    r"^(?:microsoft (?:word|powerpoint|excel)\b|untitled\b|document\d*$)", re.IGNORECASE
)
_PAGE_WORDS = frozenset(
    {"page", "pages", "p", "p.", "pg", "pg.", "of", "/", "|", "-", "–", "—", "第", "页", "共"}
)
_DIGITS_RE = re.compile(r"\d+")
_PAGE_NUMBER_RE = re.compile(r"[-–—(\[]*(\d{1,4})[-–—)\]]*")


@dataclass(frozen=True, slots=True)
class _MarginLine:
    page: int
    top: bool  # in the top band (else the bottom one)
    y: float  # the line's top, in points (-1 when unknown)
    text: str


def _metadata_title(doc: pymupdf.Document) -> str | None:
    """The metadata title when it reads like one: two words or more, not an application's or a
    file's name."""
    try:
        raw = (doc.metadata or {}).get("title") or ""
    except Exception:
        return None
    title = " ".join(str(raw).split())
    if (
        len(title.split()) < 2
        or len(title) > TITLE_MAX_CHARS
        or sum(ch.isalpha() for ch in title) < 4
        or _FILE_NAME_RE.search(title)
        or _APP_TITLE_RE.match(title)
    ):
        return None
    return title


def _first_page_title(lines: Sequence[tuple[float, str]]) -> str | None:
    """The lines set in the largest size on the first page with text (at most three, in reading
    order), when that size is not the only one on the page."""
    sizes = {size for size, text in lines if _visible(text)}
    if len(sizes) < 2:
        return None
    top = max(sizes)
    picked = [text.strip() for size, text in lines if size == top and _visible(text)][:HEADING_MAX_LINES]
    title = _join_lines(picked)
    if not title or len(title) > TITLE_MAX_CHARS or sum(ch.isalpha() for ch in title) < 3:
        return None
    return title


def _margin_lines(page: int, blocks: Sequence[Sequence[_Line]], height: float) -> list[_MarginLine]:
    lines = [ln for block in blocks for ln in block if ln.text.strip()]
    if height <= 0 or not lines:
        return []
    top = sorted((ln for ln in lines if ln.y1 <= height * MARGIN_BAND), key=lambda ln: ln.y0)
    bottom = sorted((ln for ln in lines if ln.y0 >= height * (1 - MARGIN_BAND)), key=lambda ln: -ln.y1)
    return [_MarginLine(page, True, ln.y0, ln.text.strip()) for ln in top[:MARGIN_LINES]] + [
        _MarginLine(page, False, ln.y0, ln.text.strip()) for ln in bottom[:MARGIN_LINES]
    ]


def _text_margins(pages: Sequence[str]) -> list[_MarginLine]:
    """Margin lines without geometry (markdown mode): the first and the last line of each page."""
    out: list[_MarginLine] = []
    for i, text in enumerate(pages):
        lines = [ln.strip().lstrip("#").strip() for ln in text.splitlines() if ln.strip()]
        if lines:
            out += [_MarginLine(i + 1, True, -1.0, lines[0]), _MarginLine(i + 1, False, -1.0, lines[-1])]
    return out


def _markdown_title(pages: Sequence[str]) -> str | None:
    """Markdown mode: the first top-level heading of the first page with text (of the first three)."""
    for text in pages[:TITLE_MAX_PAGE]:
        if not _visible(text):
            continue
        for line in text.splitlines():
            if line.startswith("# ") and line[2:].strip():
                title = line[2:].strip()
                return title if len(title) <= TITLE_MAX_CHARS else None
        return None
    return None


def running_headers(margins: Sequence[_MarginLine], text_pages: int) -> dict[int, tuple[str, ...]]:
    """Page -> its running headers and footers: margin lines that, with their numbers ignored, recur
    at the same height in the same margin on at least ``HEADER_MIN_PAGES`` pages and
    ``HEADER_MIN_SHARE`` of the pages with text. Shown as the words every occurrence shares (a
    page number or a count that changes is dropped); a line left with no word but "page", "of"
    and the like is a page number and is not a header."""
    need = max(HEADER_MIN_PAGES, round(HEADER_MIN_SHARE * text_pages))
    groups: dict[tuple[bool, str], list[_MarginLine]] = {}
    for m in margins:
        if len(m.text) <= HEADER_MAX_CHARS:
            key = (m.top, _DIGITS_RE.sub("#", " ".join(m.text.casefold().split())))
            groups.setdefault(key, []).append(m)
    out: dict[int, list[str]] = {}
    for members in groups.values():
        ys = sorted(m.y for m in members)
        median = ys[len(ys) // 2]
        steady = [m for m in members if abs(m.y - median) <= MARGIN_Y_TOLERANCE]
        pages = sorted({m.page for m in steady})
        if len(pages) < need:
            continue
        text = _shared_words([m.text for m in steady], [m.page for m in steady])
        if text is None:
            continue
        for page in pages:
            if text not in out.setdefault(page, []):
                out[page].append(text)
    return {page: tuple(texts) for page, texts in sorted(out.items())}


def _shared_words(texts: Sequence[str], pages: Sequence[int]) -> str | None:
    """The words every text (on ``pages``) has at the same place. A word that changes must be a page
    number: digits that go up with the page (number minus page the same on 80% of the pages);
    anything else that changes ("Table 2.1" then "Table 3.4", "Goal 1" then "Goal 2") makes the line
    numbered content, not a header. None when fewer than three letters are left outside words like
    "page" and "of"."""
    split = [t.split() for t in texts]
    common = Counter(tuple(ws) for ws in split).most_common(1)[0][0]
    if any(len(ws) != len(common) for ws in split):
        return None
    words: list[str] = []
    for i, word in enumerate(common):
        values = [ws[i] for ws in split]
        if all(v == word for v in values):
            words.append(word)
            continue
        numbers = [_PAGE_NUMBER_RE.fullmatch(v) for v in values]
        if not all(numbers):
            return None
        offsets = Counter(int(m.group(1)) - page for m, page in zip(numbers, pages, strict=True) if m)
        if offsets.most_common(1)[0][1] < 0.8 * len(values):
            return None
    while words and not any(ch.isalnum() for ch in words[-1]):  # "Annual Report –" after "7" went
        words.pop()
    while words and not any(ch.isalnum() for ch in words[0]):
        words.pop(0)
    if sum(ch.isalpha() for w in words if w.casefold() not in _PAGE_WORDS for ch in w) < 3:
        return None
    return " ".join(words)


# --- line joining ---------------------------------------------------------------------------------


def _is_cjk(ch: str) -> bool:
    """Characters written without spaces between words (Chinese, Japanese, full-width forms)."""
    o = ord(ch)
    return (
        0x3000 <= o <= 0x30FF  # CJK punctuation, kana
        or 0x3400 <= o <= 0x4DBF  # extension A
        or 0x4E00 <= o <= 0x9FFF  # unified ideographs
        or 0xF900 <= o <= 0xFAFF  # compatibility ideographs
        or 0xFF00 <= o <= 0xFFEF  # full-width forms and punctuation
        or 0x20000 <= o <= 0x2FA1F  # extensions B-F, compatibility supplement
    )


def _is_cjk_punct(ch: str) -> bool:
    """Full-width punctuation (。，、；：！？（）「」 ...), never followed or preceded by a space."""
    o = ord(ch)
    return 0x3000 <= o <= 0x303F or (0xFF00 <= o <= 0xFFEF and not ch.isalnum())


def _joiner(left: str, right: str) -> str:
    """What goes between two soft-wrapped lines: nothing between CJK characters or next to
    full-width punctuation, nothing after a hyphen between two Latin letters ("multi-" + "line",
    the hyphen is kept), else a space."""
    if not left or not right:
        return ""
    a, b = left[-1], right[0]
    if (_is_cjk(a) and _is_cjk(b)) or _is_cjk_punct(a) or _is_cjk_punct(b):
        return ""
    if a == "-" and len(left) > 1 and left[-2].isalpha() and b.isalpha():
        return ""
    return " "


def _join_lines(lines: Sequence[str]) -> str:
    out = ""
    for raw in lines:
        line = raw.strip()
        if line:
            out = out + _joiner(out, line) + line if out else line
    return out
