"""Split a document's extracted text into retrieval chunks.

Every chunk is a :class:`~rag.models.ChunkSpan`: ``text[start:end]`` of the string that was given (never
rewritten), stripped of surrounding whitespace, never empty, in document order. Together the chunks cover
every non-whitespace character of the document.

Size is counted in *units* (:func:`measure`), a cheap stand-in for LLM tokens that is fair to Chinese.

How a markdown document is cut (:func:`chunk_markdown`):

1. **Front matter** (a ``---`` line, YAML lines starting with ``key:``, a closing ``---`` or ``...`` line, at
   the very top) is kept as a chunk of its own with heading path ``()``: titles and tags are worth finding.
2. **Blocks** come from ``markdown-it-py`` (CommonMark plus tables; top-level blocks only). A block runs from
   its first line to the line where the next block starts, so text the parser drops (link reference
   definitions) stays covered.
3. **Sections.** Every top-level heading (ATX or setext) starts a section; its ``heading_path`` is the stack
   of enclosing heading texts with inline markup removed. Text before the first heading has path ``()``.
   The heading line is the start of its section's first chunk. Sections are never merged, with one
   exception: a heading with no body (``# A`` directly followed by ``## B``) is put in front of the next
   section's first chunk, which keeps the next section's path (``("A", "B")`` in that example).
4. **Packing.** Within a section, whole blocks are packed greedily while the chunk stays within ``size``
   units. A block larger than ``size`` is cut into pieces that are packed the same way: fenced/indented code
   and tables into runs of whole lines; paragraphs, lists, quotes and HTML at sentence ends (``. ! ?``
   followed by whitespace, ``。！？；．…``, newlines), then at commas (``，、,;``), then every ``size`` units
   (never inside a word). An unclosed fence runs to the end of the document (CommonMark), so it is split
   on lines. When a section's heading and its first paragraph do not fit together, the paragraph's first
   sentences join the heading rather than leaving the heading alone.
5. **Overlap.** The next chunk of the same section starts with the previous chunk's last sentences or lines
   (at most ``overlap`` units, never the whole previous chunk, never inside a code block or table that was
   kept whole, code/table lines only when the next chunk goes on with the same block), so consecutive
   chunks share about ``overlap`` units; ``overlap=0`` gives disjoint chunks. Chunks never overlap across
   headings or hard breaks.
6. **Hard breaks** (PDF page starts) end chunks: no chunk contains a break offset strictly inside it. The
   heading path carries across them (a section goes on on the next page); a body-less heading does not
   attach across a break.

Deliberately not handled: ``#标题`` without a space is a paragraph (CommonMark; often a tag), headings
inside lists or quotes do not start sections. :func:`chunk_plain` cuts ``.txt`` files the same way, with
blank-line separated paragraphs as blocks and heading path ``()``.

Speed (one core): about 5 MB/s of Chinese notes, 3 MB/s of English; the time is linear in the input but
grows with the number of lines markdown-it has to parse (a file of one-word headings runs at ~0.1 MB/s).
"""

from __future__ import annotations

import bisect
import functools
import gc
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple

from rag.errors import ConfigError
from rag.models import ChunkSpan

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

__all__ = ["TableHeaders", "chunk_markdown", "chunk_plain", "document_title", "measure", "table_header_at"]

# --- units ----------------------------------------------------------------------------------------------

# Letters of CJK scripts: Han (with 々〆〇 and Hangzhou numerals), kana, bopomofo, hangul, CJK radicals.
_CJK = (
    "\u1100-\u11ff\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3031-\u3035\u3038-\u303c"
    "\u3040-\u309f\u30a1-\u30fa\u30fc-\u30ff\u3100-\u312f\u3130-\u318f\u31a0-\u31bf\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0003134f"
)
# CJK and full-width punctuation (。，、！？；：「」《》（） and the like): 0 units.
_CJK_PUNCT = (
    "\u3000-\u3004\u3008-\u3020\u302a-\u3030\u3036\u3037\u303d-\u303f\u30a0\u30fb"
    "\ufe10-\ufe1f\ufe30-\ufe4f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
)
_UNIT_RE = re.compile(
    f"[{_CJK}]"  # one CJK letter
    f"|[^\\W{_CJK}]+(?:[-.'’][^\\W{_CJK}]+)*"  # a word, number or identifier: Qwen2-7B, snake_case, 3.14
    f"|[^\\w\\s{_CJK}{_CJK_PUNCT}]+"  # a run of other symbols: --, ```, |, ->
)
# A "word" longer than this (a hash, a base64 blob) counts one unit per this many characters, so that a
# pasted data: URI cannot become one enormous one-unit chunk.
_LONG_RUN = 64
# Cheap test for "may hold such a run": a long stretch without whitespace, CJK letters or CJK punctuation.
_NOT_IN_RUNS = f"\\s{_CJK_PUNCT}\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_MAYBE_LONG_RUN_RE = re.compile(f"(?<![^{_NOT_IN_RUNS}])[^{_NOT_IN_RUNS}]{{{_LONG_RUN + 1},}}")


def measure(text: str) -> int:
    """Size of ``text`` in units, an approximation of LLM tokens that is fair to CJK text.

    Each CJK letter (Han, kana, hangul) is 1 unit; CJK and full-width punctuation is 0; each run of letters
    and digits (a word, a number, an identifier such as ``snake_case`` or ``Qwen2-7B``) is 1 unit, or one
    per 64 characters when longer than that; each run of other symbols (``--``, ``|``, ``->``) is 1 unit;
    whitespace is 0. Rationale: common LLM tokenizers spend about one token per Han character and about
    1.3 per English word, so a size in units means roughly the same amount of text in both languages
    (English runs ~30% over in tokens), at regex speed instead of a tokenizer's.
    """
    return _count(text, 0, len(text))


def _count(text: str, start: int, end: int) -> int:
    piece = text[start:end]
    units = _UNIT_RE.subn("", piece)[1]  # subn counts without building the matched strings
    if end - start > _LONG_RUN and _MAYBE_LONG_RUN_RE.search(piece):
        units += sum((len(r) - 1) // _LONG_RUN for r in _UNIT_RE.findall(piece) if len(r) > _LONG_RUN)
    return units


# --- splitting helpers ----------------------------------------------------------------------------------

_NEWLINE_RE = re.compile(r"\r\n?|\n")  # what markdown-it's normalisation treats as a line break
_SENTENCE_END_RE = re.compile(
    r"(?<![.!?])[.!?]+[\"'”’)\]]*(?=\s|\Z)"  # Latin sentence end, only before whitespace (keeps 3.14)
    r"|[。！？；．…]+[\"'”’」』）】》〉)\]]*"  # CJK sentence end, with closing quotes/brackets
    r"|\r\n?|\n"
)
_CLAUSE_END_RE = re.compile(r"[，、,;]")
_BLANK_LINE_RE = re.compile(r"(?:\r\n?|\n)[^\S\r\n]*(?:\r\n?|\n)")


class _Atom(NamedTuple):
    """Smallest span a chunk may start (overlap) or end at: ``text[start:end]``, trimmed, ``units`` big."""

    start: int
    end: int
    units: int


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    piece = text[start:end]
    stripped = piece.lstrip()
    if not stripped:
        return start, start
    start += len(piece) - len(stripped)
    return start, start + len(stripped.rstrip())


def _partition(text: str, start: int, end: int, cut_after: re.Pattern[str]) -> list[_Atom]:
    """Cut ``text[start:end]`` after every match of ``cut_after``; trimmed, non-empty pieces."""
    atoms: list[_Atom] = []
    prev = start
    for m in cut_after.finditer(text, start, end):
        cut = m.end()
        if cut > prev:
            _append_trimmed(atoms, text, prev, cut)
            prev = cut
    if prev < end:
        _append_trimmed(atoms, text, prev, end)
    return atoms


def _append_trimmed(atoms: list[_Atom], text: str, start: int, end: int) -> None:
    s, e = _trim(text, start, end)
    if s < e:
        atoms.append(_Atom(s, e, _count(text, s, e)))


def _hard_split(text: str, start: int, end: int, size: int) -> list[_Atom]:
    """Cut every ``size`` units, at unit boundaries only (a long run counts, and is cut, per 64 chars)."""
    unit_starts: list[int] = []
    for m in _UNIT_RE.finditer(text, start, end):
        a, b = m.span()
        unit_starts.append(a)
        if b - a > _LONG_RUN:
            unit_starts.extend(range(a + _LONG_RUN, b, _LONG_RUN))
    cuts = [start, *unit_starts[size::size], end]
    atoms: list[_Atom] = []
    for a, b in itertools.pairwise(cuts):
        _append_trimmed(atoms, text, a, b)
    return atoms


Kind = Literal["heading", "code", "table", "text", "front"]
_LINE_KINDS = ("code", "table", "front")  # kept whole when they fit, else cut between lines


class _Region(NamedTuple):
    """A block: ``text[start:end]`` (untrimmed); regions partition the document."""

    start: int
    end: int
    kind: Kind
    level: int = 0  # heading level 1..6
    title: str = ""  # heading text, markup removed


def _groups(text: str, start: int, end: int, kind: Kind, size: int) -> list[list[_Atom]]:
    """Atoms of one block, grouped: a group is kept in one chunk; groups are at most ``size`` units."""
    if kind in _LINE_KINDS:
        units = _count(text, start, end)
        if units <= size:
            return [[_Atom(start, end, units)]]
        # Runs of whole lines, each run as big as fits: the fence line stays with the code after it.
        out: list[list[_Atom]] = []
        piece: list[_Atom] = []
        piece_units = 0
        for line in _partition(text, start, end, _NEWLINE_RE):
            if piece and piece_units + line.units > size:
                out.append(piece)
                piece, piece_units = [], 0
            if line.units <= size:
                piece.append(line)
                piece_units += line.units
            else:
                out.extend([h] for h in _hard_split(text, line.start, line.end, size))
        if piece:
            out.append(piece)
        return out
    sentences = _partition(text, start, end, _SENTENCE_END_RE)
    if sum(a.units for a in sentences) <= size:
        return [sentences] if sentences else []
    out = []
    for sentence in sentences:
        if sentence.units <= size:
            out.append([sentence])
            continue
        for clause in _partition(text, sentence.start, sentence.end, _CLAUSE_END_RE):
            if clause.units <= size:
                out.append([clause])
            else:
                out.extend([h] for h in _hard_split(text, clause.start, clause.end, size))
    return out


class _Group(NamedTuple):
    """Atoms that go into one chunk together (at most ``size`` units), from block number ``block``."""

    atoms: list[_Atom]
    units: int
    block: int
    kind: Kind


def _keep_heading_with_body(groups: list[_Group], size: int) -> None:
    """Let a section's heading share its chunk with the first sentences of a paragraph too big to join it."""
    i = heading_units = 0
    while i < len(groups) and groups[i].kind == "heading":
        heading_units += groups[i].units
        i += 1
    if 0 < i < len(groups):
        body = groups[i]
        if body.kind == "text" and len(body.atoms) > 1 and heading_units + body.units > size:
            groups[i : i + 1] = [_Group([a], a.units, body.block, body.kind) for a in body.atoms]


def _foreign_lines(group: _Group, next_group: _Group) -> bool:
    """Code/table lines are no overlap for a chunk that does not continue the same block."""
    return group.kind in _LINE_KINDS and group.block != next_group.block


def _pack(groups: list[_Group], size: int, overlap: int) -> Iterator[tuple[int, int]]:
    """Greedy packing of groups into chunks of at most ``size`` units, with about ``overlap`` shared.

    The next chunk starts with the previous chunk's last atoms (sentences or lines) worth at most
    ``overlap`` units; that tail never is the whole previous chunk, and it leaves out code/table lines
    unless the next chunk continues the same block.
    """
    atoms: list[_Atom] = []
    owner: list[int] = []  # group index of each atom
    first: list[int] = []  # index in atoms of each group's first atom, plus a sentinel
    for gi, group in enumerate(groups):
        first.append(len(atoms))
        atoms.extend(group.atoms)
        owner.extend([gi] * len(group.atoms))
    first.append(len(atoms))
    g, n = 0, len(groups)
    tail: int | None = None  # atom where the next chunk starts, inside the previous chunk
    while g < n:
        k, total = first[g], 0
        if tail is not None:
            k = tail
            total = sum(a.units for a in atoms[tail : first[g]])
            while k < first[g] and total + groups[g].units > size:
                total -= atoms[k].units
                k += 1
        total += groups[g].units
        j = g + 1
        while j < n and total + groups[j].units <= size:
            total += groups[j].units
            j += 1
        last = first[j] - 1
        yield atoms[k].start, atoms[last].end
        g, tail = j, None
        if overlap > 0 and g < n:
            t, shared = last + 1, 0
            while t - 1 > k and shared + atoms[t - 1].units <= overlap:
                t -= 1
                shared += atoms[t].units
            while t <= last and _foreign_lines(groups[owner[t]], groups[g]):
                t = first[owner[t] + 1]
            if t <= last:
                tail = t


# --- markdown structure ---------------------------------------------------------------------------------

_FRONT_OPEN_RE = re.compile(r"\ufeff?---[ \t]*(?:\r\n?|\n)(?=[\w\"'][^\r\n]*:)")
_FRONT_CLOSE_RE = re.compile(r"^(?:---|\.\.\.)[ \t]*\r?$", re.MULTILINE)
_CODE_SPAN_RE = re.compile(r"(`+)(.+?)\1")
_LINK_RE = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][^>]*>")
_EMPHASIS_RE = re.compile(r"[*~`]+|(?<!\w)_+|_+(?!\w)")
_ESCAPE_RE = re.compile(r"\\([!-/:-@\[-`{-~])")
_MAX_TITLE_SCAN = 1000  # a setext "heading" can be a whole paragraph; bounds the regexes' work


def _front_matter_end(text: str) -> int:
    """End offset of a YAML front matter block at the top of ``text`` (0 when there is none)."""
    opening = _FRONT_OPEN_RE.match(text)
    if opening is None:
        return 0
    closing = _FRONT_CLOSE_RE.search(text, opening.end())
    if closing is None:
        return 0
    end = closing.end()
    newline = _NEWLINE_RE.match(text, end)
    return newline.end() if newline else end


def _heading_title(raw: str) -> str:
    """Heading text without inline markup: ``**a** `b_c` [d](u)`` -> ``a b_c d``."""
    raw = raw[:_MAX_TITLE_SCAN]
    parts: list[str] = []
    pos = 0
    for m in _CODE_SPAN_RE.finditer(raw):
        parts.append(_strip_inline(raw[pos : m.start()]))
        parts.append(m.group(2).strip())
        pos = m.end()
    parts.append(_strip_inline(raw[pos:]))
    return " ".join("".join(parts).split())


def _strip_inline(s: str) -> str:
    s = _LINK_RE.sub(r"\1", s)
    s = _HTML_TAG_RE.sub("", s)
    s = _EMPHASIS_RE.sub("", s)
    return _ESCAPE_RE.sub(r"\1", s)


@functools.lru_cache(maxsize=1)
def _block_parser() -> MarkdownIt:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    md.core.ruler.enableOnly(["normalize", "block"])  # block structure only: no inline parsing
    return md


def _markdown_regions(text: str) -> list[_Region]:
    regions: list[_Region] = []
    body = _front_matter_end(text)
    if body:
        regions.append(_Region(0, body, "front"))
    line_starts = [0]
    line_starts.extend(m.end() for m in _NEWLINE_RE.finditer(text))
    skipped_lines = bisect.bisect_left(line_starts, body)
    # Blank lines in place of the front matter keep markdown-it's line numbers equal to ours.
    source = "\n" * skipped_lines + text[body:]
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the parser allocates many small objects; collection passes cost ~30% on big files
    try:
        tokens = _block_parser().parse(source)
    finally:
        if gc_was_enabled:
            gc.enable()

    def offset(line: int) -> int:
        return line_starts[line] if line < len(line_starts) else len(text)

    starts: list[tuple[int, Kind, int, str]] = []
    for i, tok in enumerate(tokens):
        if tok.level != 0 or tok.map is None or tok.nesting == -1:
            continue
        if tok.type == "heading_open":
            title = _heading_title(tokens[i + 1].content) if i + 1 < len(tokens) else ""
            starts.append((offset(tok.map[0]), "heading", int(tok.tag[1:]), title))
        elif tok.type in ("fence", "code_block"):
            starts.append((offset(tok.map[0]), "code", 0, ""))
        elif tok.type == "table_open":
            starts.append((offset(tok.map[0]), "table", 0, ""))
        else:
            starts.append((offset(tok.map[0]), "text", 0, ""))
    if not starts or starts[0][0] > body:
        regions.append(_Region(body, starts[0][0] if starts else len(text), "text"))
    ends = [start for start, *_ in starts[1:]]
    ends.append(len(text))
    for (start, kind, level, title), end in zip(starts, ends, strict=False):
        regions.append(_Region(start, end, kind, level, title))
    return regions


def _plain_regions(text: str) -> list[_Region]:
    regions: list[_Region] = []
    prev = 0
    for m in _BLANK_LINE_RE.finditer(text):
        regions.append(_Region(prev, m.end(), "text"))
        prev = m.end()
    regions.append(_Region(prev, len(text), "text"))
    return regions


# --- assembling chunks ----------------------------------------------------------------------------------


@dataclass
class _Run:
    """Consecutive blocks of one section within one hard-break segment: packed together."""

    section: int
    segment: int
    path: tuple[str, ...]
    groups: list[_Group] = field(default_factory=list)
    heading_only: bool = True


def _check_sizes(size: int, overlap: int) -> None:
    if size < 1:
        raise ConfigError(f"chunk size must be at least 1 unit, got {size}")
    if not 0 <= overlap < size:
        raise ConfigError(f"chunk overlap must be between 0 and size-1 ({size - 1}), got {overlap}")


def _chunk_regions(
    text: str, regions: list[_Region], size: int, overlap: int, hard_breaks: Sequence[int]
) -> list[ChunkSpan]:
    breaks = sorted({b for b in hard_breaks if 0 < b < len(text)})
    runs: list[_Run] = []
    stack: list[tuple[int, str]] = []  # (level, title) of the enclosing headings
    section = block = 0
    path: tuple[str, ...] = ()
    for region in regions:
        if region.kind == "heading":
            section += 1
            while stack and stack[-1][0] >= region.level:
                stack.pop()
            stack.append((region.level, region.title))
            path = tuple(t for _, t in stack if t)
        this_section = -1 if region.kind == "front" else section
        lo = bisect.bisect_right(breaks, region.start)
        hi = bisect.bisect_left(breaks, region.end)
        cuts = [region.start, *breaks[lo:hi], region.end]
        for a, b in itertools.pairwise(cuts):
            s, e = _trim(text, a, b)
            if s == e:
                continue
            segment = bisect.bisect_right(breaks, s)
            if not runs or (runs[-1].section, runs[-1].segment) != (this_section, segment):
                runs.append(_Run(this_section, segment, path))
            run = runs[-1]
            block += 1
            run.groups.extend(
                _Group(atoms, sum(a.units for a in atoms), block, region.kind)
                for atoms in _groups(text, s, e, region.kind, size)
            )
            run.heading_only = run.heading_only and region.kind == "heading"

    chunks: list[ChunkSpan] = []

    def emit(run: _Run) -> None:
        _keep_heading_with_body(run.groups, size)
        chunks.extend(ChunkSpan(s, e, run.path) for s, e in _pack(run.groups, size, overlap))

    pending: _Run | None = None  # a body-less heading waiting for the next section
    for run in runs:
        if pending is not None and pending.segment != run.segment:
            emit(pending)
            pending = None
        if pending is not None:
            pending.groups.extend(run.groups)
            pending.path = run.path
            pending.heading_only = run.heading_only
            run, pending = pending, None
        if run.heading_only:
            pending = run
        else:
            emit(run)
    if pending is not None:
        emit(pending)
    return chunks


def chunk_markdown(text: str, *, size: int, overlap: int, hard_breaks: Sequence[int] = ()) -> list[ChunkSpan]:
    """Chunks of a markdown document: sections by heading, blocks packed up to ``size`` units.

    ``overlap`` units are shared between consecutive chunks of one section; no chunk spans an offset in
    ``hard_breaks``. See the module docstring for the exact rules. Raises :class:`~rag.errors.ConfigError`
    unless ``size >= 1`` and ``0 <= overlap < size``.
    """
    _check_sizes(size, overlap)
    if not text.strip():
        return []
    return _chunk_regions(text, _markdown_regions(text), size, overlap, hard_breaks)


def chunk_plain(text: str, *, size: int, overlap: int, hard_breaks: Sequence[int] = ()) -> list[ChunkSpan]:
    """Chunks of plain text: blank-line separated paragraphs packed up to ``size`` units, path ``()``.

    Long paragraphs split at sentence ends, then commas, then every ``size`` units; ``overlap`` and
    ``hard_breaks`` work as in :func:`chunk_markdown`.
    """
    _check_sizes(size, overlap)
    if not text.strip():
        return []
    return _chunk_regions(text, _plain_regions(text), size, overlap, hard_breaks)


# --- what identifies a chunk beyond its own text --------------------------------------------------------

_TABLE_DELIMITER_RE = re.compile(r"[ \t]{0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*")
_TABLE_CELL_SPLIT_RE = re.compile(r"(?<!\\)\|")
_TITLE_SCAN = 20_000  # characters searched for a document's title
_ATX_H1_RE = re.compile(r"^[ ]{0,3}#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FRONT_TITLE_RE = re.compile(r"^title:[ \t]*[\"']?(.+?)[\"']?[ \t]*$", re.MULTILINE | re.IGNORECASE)
_TABLE_ROW_RE = re.compile(r"^[ \t]{0,3}\|[^\r\n]*", re.MULTILINE)


class TableHeaders:
    """The markdown tables of a text, found in one pass: :meth:`at` gives the header row of the
    table an offset lies inside."""

    def __init__(self, text: str) -> None:
        self._starts: list[int] = []  # where each table's second line (its delimiter row) starts
        self._ends: list[int] = []  # where each table's last line ends
        self._headers: list[str] = []
        if "|" not in text:
            return
        run: list[re.Match[str]] = []
        for m in itertools.chain(_TABLE_ROW_RE.finditer(text), [None]):
            if m is not None and run and _skip_newline(text, run[-1].end()) == m.start():
                run.append(m)
                continue
            if len(run) >= 2 and _TABLE_DELIMITER_RE.fullmatch(run[1].group(0)):
                cells = [
                    c.strip().replace("\\|", "|") for c in _TABLE_CELL_SPLIT_RE.split(run[0].group(0).strip())
                ]
                header = " | ".join(c for c in cells if c)
                if header:
                    self._starts.append(run[1].start())
                    self._ends.append(run[-1].end())
                    self._headers.append(header)
            run = [m] if m is not None else []

    def at(self, offset: int) -> str | None:
        """The header row (cells joined by " | ") of the table whose body holds ``offset``, so that a
        chunk starting there does not hold it; None outside table bodies (and on a header row)."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0 and offset < self._ends[i]:
            return self._headers[i]
        return None


def table_header_at(text: str, start: int) -> str | None:
    """``TableHeaders(text).at(start)``, for one offset."""
    return TableHeaders(text).at(start)


def _skip_newline(text: str, pos: int) -> int:
    if text.startswith("\r\n", pos):
        return pos + 2
    return pos + 1 if pos < len(text) and text[pos] in "\r\n" else pos


def document_title(text: str, fmt: str) -> str | None:
    """A markdown document's title: ``title:`` in its front matter, else its first ``#`` heading
    (outside code). A text document's: its first line, when short and a paragraph of its own."""
    head = text[:_TITLE_SCAN]
    if fmt == "markdown":
        front = _front_matter_end(head)
        if front:
            m = _FRONT_TITLE_RE.search(head, 0, front)
            if m and m.group(1).strip():
                return _heading_title(m.group(1))
        fence: str | None = None
        for raw in head[front:].splitlines():
            marker = _FENCE_MARK_RE.match(raw)
            if marker:
                tick = marker.group(1)[0]
                if fence is None:
                    fence = tick
                elif fence == tick:
                    fence = None
                continue
            if fence is None:
                m = _ATX_H1_RE.match(raw)
                if m:
                    return _heading_title(m.group(1)) or None
        return None
    lines = head.lstrip().splitlines()
    if len(lines) >= 2 and not lines[1].strip():
        first = lines[0].strip()
        if 0 < measure(first) <= 20 and len(first) <= 120 and not first.endswith(_TITLE_STOPS):
            return first
    return None


_FENCE_MARK_RE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")
_TITLE_STOPS = tuple(".。!！?？:：;；,，")
