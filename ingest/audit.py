"""`rag audit`: look through every file of a data dir for stored secret-looking strings.

Redaction happens before indexing, but an index built by an older redactor, a
crash between writes, a log or a store that keeps deleted data around can
still hold a pasted password. The audit does not trust any store to say what
it holds: it reads the bytes.

* **SQLite files** (chunk store, graph, embedding cache, and their ``-wal``
  journals) are read page by page with a small decoder of the file format:
  every record of every b-tree page is split into its fields, each text field
  scanned on its own (fields sit next to each other on disk, and two harmless
  neighbours can read as ``"password": 1}GPU``); free space inside pages,
  freelist pages and overflow pages are scanned as raw text, because that is
  where deleted rows linger. The main file is also read through SQLite itself
  (every text column of every table), which sees text split across pages.
* **BMX generations** (``*_blob.npy`` + ``*_off.npy``): the string tables are
  decoded term by term; a term that no live document holds (``df`` 0) is
  reported as ``stale_term``: text of deleted chunks that outlived them.
* **JSON files**: parsed, every ``key: value`` scanned (JSON escapes would hide
  Chinese labels from a byte scan).
* **Anything else** (vector store segments and WAL, logs, caches): printable
  UTF-8 runs, like ``strings`` but keeping CJK, so ``密码 value`` survives.

The detector is :func:`ingest.secrets.find_secrets`, the same rules the
redactor applies. Excerpts never show a secret: the value is masked to its
first two characters and its length, because the audit output is a log too.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import mmap
import os
import re
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest import secrets as _secrets

_Span = tuple[int, int, str]

#: Bytes per window of a raw scan (windows overlap by :data:`_OVERLAP`).
WINDOW = 4 << 20
_OVERLAP = 4096
#: Characters of text per detector call (strings are batched, see :class:`_Collector`).
BATCH_CHARS = 200_000
# Between batched strings: more blank lines than any rule looks across, and a line no rule reads.
_SEPARATOR = "\n\n\n\n\x00\n\n\n\n"
#: Characters of context shown before a masked value.
CONTEXT = 24
#: Printable runs shorter than this carry no secret worth reporting.
MIN_RUN = 6

_SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_MAGICS = (0x377F0682, 0x377F0683)
# a candidate text run: printable ASCII, tabs/newlines and UTF-8 lead/continuation bytes
_RUN_BYTES = re.compile(rb"[\t\n\r\x20-\x7e\x80-\xbf\xc2-\xf4]{%d,}" % MIN_RUN)
_ASCII4 = re.compile(r"[!-~]{4}")


@dataclass(frozen=True, slots=True)
class Finding:
    """One stored secret-looking string: which file, what kind, a masked excerpt and where inside."""

    file: str
    kind: str
    excerpt: str
    where: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "kind": self.kind, "excerpt": self.excerpt, "where": self.where}


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    took_s: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "findings": [f.as_dict() for f in self.findings],
            "files": self.files,
            "bytes": self.bytes,
            "took_s": round(self.took_s, 3),
        }


# -- detection and masking -------------------------------------------------------------------------


def _detector() -> Callable[[str], list[_Span]]:
    """The redactor's own finder; older versions of it only offered ``redact``, whose rules these are."""
    found = getattr(_secrets, "find_secrets", None)
    if found is not None:
        return found  # type: ignore[no-any-return]
    rules, merge = _secrets._RULES, _secrets._merge  # type: ignore[attr-defined]

    def find(text: str) -> list[_Span]:
        hits = [(s, e, kind, prio) for prio, rule in enumerate(rules) for s, e, kind in rule(text) if e > s]
        return merge(hits) if hits else []

    return find


def mask(value: str) -> str:
    """``Tr0ub4dor&3`` -> ``Tr…(11 chars)``: enough to find it in the notes, not enough to use it."""
    value = value.strip()
    keep = 2 if len(value) >= 6 else min(1, len(value))
    return f"{value[:keep]}…({len(value)} chars)"


def _excerpt(text: str, span: _Span, spans: list[_Span]) -> str:
    """Up to :data:`CONTEXT` characters of the same line before the value, with every secret masked."""
    start, end, _ = span
    line_start = max(text.rfind("\n", 0, start) + 1, start - CONTEXT)
    pieces: list[str] = []
    pos = line_start
    for s, e, _ in spans:
        if e <= line_start or s >= start:
            continue
        s = max(s, line_start)
        pieces.append(text[pos:s])
        pieces.append(mask(text[s:e]))
        pos = e
    pieces.append(text[pos:start])
    before = "".join(pieces)
    before = "".join(ch if ch.isprintable() else " " for ch in before).lstrip()
    return before + mask(text[start:end])


class _Collector:
    """Findings of one audit, one per (file, kind, value): the first place a value is seen names it.

    Strings (fields, runs) are detected in batches: one detector call per :data:`BATCH_CHARS` of
    text instead of one per field (a graph holds hundreds of thousands of short fields). A batch
    only says which strings to look at: each one with a hit is scanned again on its own, and only
    what it holds by itself is reported, so neighbours in a batch never make a finding.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.find = _detector()
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, str, str]] = set()
        self._pending: list[tuple[str, str, str]] = []  # (file, text, where)
        self._pending_chars = 0

    def scan(self, file: str, text: str, where: str) -> None:
        if not text or not _ASCII4.search(text):  # no secret value without a few visible ASCII characters
            return
        self._pending.append((file, text, where))
        self._pending_chars += len(text)
        if self._pending_chars >= BATCH_CHARS:
            self.flush()

    def flush(self) -> None:
        pending, self._pending, self._pending_chars = self._pending, [], 0
        if not pending:
            return
        starts: list[int] = []
        pos = 0
        for _, text, _ in pending:
            starts.append(pos)
            pos += len(text) + len(_SEPARATOR)
        hit_fields = {
            bisect.bisect_right(starts, s) - 1
            for s, _, _ in self.find(_SEPARATOR.join(t for _, t, _ in pending))
        }
        for i in sorted(hit_fields):
            self._scan_one(*pending[i])

    def _scan_one(self, file: str, text: str, where: str) -> None:
        spans = sorted(self.find(text))
        for span in spans:
            start, end, kind = span
            value = text[start:end].strip()
            if not value or value.startswith("[REDACTED:"):
                continue
            self.add(file, kind, value, _excerpt(text, span, spans), where)

    def add(self, file: str, kind: str, value: str, excerpt: str, where: str) -> None:
        key = (file, kind, value)
        if key in self._seen:
            return
        self._seen.add(key)
        self.findings.append(Finding(file=file, kind=kind, excerpt=excerpt, where=where))

    def scan_runs(self, file: str, data: bytes | mmap.mmap, base: int, label: str) -> None:
        """Secret-looking strings in the printable UTF-8 runs of ``data`` (offsets relative to ``base``).

        Each run is scanned on its own: joined, the end of one run and the start of the next (a
        dictionary word, float bytes) can read as a label and its value."""
        for m in _RUN_BYTES.finditer(data):
            for piece, offset in _utf8_pieces(m.group(), m.start()):
                self.scan(file, piece, f"{label} byte {base + offset}")


def _utf8_pieces(raw: bytes, offset: int) -> Iterator[tuple[str, int]]:
    """Valid UTF-8 stretches of ``raw`` of at least :data:`MIN_RUN` characters, with byte offsets."""
    text = raw.decode("utf-8", "replace")
    if "\ufffd" not in text:
        yield text, offset
        return
    pos_b = 0
    for part in text.split("\ufffd"):
        n = len(part.encode("utf-8"))
        if len(part) >= MIN_RUN:
            yield part, offset + pos_b
        pos_b += n + 1  # the bad byte (an approximation for multi-byte garbage; only used in `where`)


# -- raw files -------------------------------------------------------------------------------------


def _scan_raw(col: _Collector, file: str, path: Path, label: str = "") -> None:
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for start in range(0, size, WINDOW):
            window = mm[start : min(size, start + WINDOW + _OVERLAP)]
            if window.count(0) == len(window):  # preallocated, never written (vector store pages, WAL)
                continue
            col.scan_runs(file, window, start, label or "at")


# -- SQLite ----------------------------------------------------------------------------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    """SQLite varint at ``buf[i]``: (value, next index). Raises IndexError past the end."""
    v = 0
    for k in range(8):
        b = buf[i + k]
        v = (v << 7) | (b & 0x7F)
        if b < 0x80:
            return v, i + k + 1
    return (v << 8) | buf[i + 8], i + 9


def _serial_size(t: int) -> int:
    if t >= 12:
        return (t - 12) // 2
    return (0, 1, 2, 3, 4, 6, 8, 8, 0, 0, 0, 0)[t]


def _record_fields(payload: bytes) -> Iterator[tuple[int, bytes]]:
    """``(serial type, bytes)`` of each text or blob field of a record (cut short where it overflows)."""
    try:
        header_len, i = _varint(payload, 0)
        types: list[int] = []
        while i < min(header_len, len(payload)):
            t, i = _varint(payload, i)
            types.append(t)
    except IndexError:
        return
    pos = header_len
    for t in types:
        n = _serial_size(t)
        if t >= 12 and pos < len(payload):
            yield t, payload[pos : pos + n]
        pos += n


@dataclass(frozen=True, slots=True)
class _PageCtx:
    file: str
    label: str  # e.g. "page 3" or "WAL frame 7 (page 3)"


class _SqlitePages:
    """Walks the pages of a SQLite database image (a main file or the frames of a WAL)."""

    def __init__(self, col: _Collector, page_size: int, reserved: int) -> None:
        self.col = col
        self.page_size = page_size
        self.usable = page_size - reserved

    def _local(self, p: int, table: bool) -> int:
        u = self.usable
        x = u - 35 if table else ((u - 12) * 64 // 255) - 23
        if p <= x:
            return p
        m = ((u - 12) * 32 // 255) - 23
        k = m + ((p - m) % (u - 4))
        return k if k <= x else m

    def page(self, ctx: _PageCtx, data: bytes, pgno: int, free: bool, *, cells: bool = True) -> None:
        """Scan one page image: free space as raw runs; with ``cells``, also the records, field by
        field, and overflow pages (without: the caller reads the live rows through SQLite)."""
        col = self.col
        if free:  # a freelist page: whatever it holds is deleted data
            col.scan_runs(ctx.file, data, 0, f"{ctx.label}, free page")
            return
        h = 100 if pgno == 1 else 0
        kind = data[h] if h < len(data) else 0
        if kind not in (2, 5, 10, 13):  # overflow (or other) page: 4-byte link, then field bytes
            if cells:
                col.scan_runs(ctx.file, data[4:], 0, f"{ctx.label}, overflow")
            return
        leaf = kind in (10, 13)
        hdr = 8 if leaf else 12
        (first_free, n_cells, content) = struct.unpack_from(">HHH", data, h + 1)
        content = content or 65536
        ptrs = h + hdr
        unallocated = data[ptrs + 2 * n_cells : min(content, self.usable)]
        col.scan_runs(ctx.file, unallocated, 0, f"{ctx.label}, unallocated space")
        seen = 0
        while first_free and seen < 10_000:  # freeblocks: 2-byte next, 2-byte size, then old cell bytes
            seen += 1
            try:
                nxt, size = struct.unpack_from(">HH", data, first_free)
            except struct.error:
                break
            col.scan_runs(ctx.file, data[first_free + 4 : first_free + size], 0, f"{ctx.label}, freeblock")
            if nxt <= first_free:
                break
            first_free = nxt
        if kind == 5 or not cells:  # interior table page: child pointers and rowids only
            return
        for c in range(n_cells):
            try:
                (off,) = struct.unpack_from(">H", data, ptrs + 2 * c)
                i = off + (0 if leaf else 4)
                p, i = _varint(data, i)
                if kind == 13:
                    _, i = _varint(data, i)  # rowid
            except (IndexError, struct.error):
                continue
            payload = data[i : i + self._local(p, table=kind == 13)]
            for t, raw in _record_fields(payload):
                where = f"{ctx.label}, record field"
                if t % 2:  # text
                    col.scan(ctx.file, raw.decode("utf-8", "replace"), where)
                else:
                    col.scan_runs(ctx.file, raw, 0, where)


def _freelist(mm: bytes | mmap.mmap, page_size: int, n_pages: int) -> set[int]:
    """Page numbers on the freelist of a database file (trunks and leaves)."""
    (trunk,) = struct.unpack_from(">I", mm, 32)
    out: set[int] = set()
    while 0 < trunk <= n_pages and trunk not in out:
        out.add(trunk)
        base = (trunk - 1) * page_size
        nxt, count = struct.unpack_from(">II", mm, base)
        count = min(count, (page_size - 8) // 4)
        out.update(struct.unpack_from(f">{count}I", mm, base + 8))
        trunk = nxt
    return out


def _scan_sqlite(col: _Collector, file: str, path: Path) -> None:
    """A database file: its live rows through SQLite, its free space (deleted rows) from the pages.
    Should SQLite not read it (damaged, or caught mid-checkpoint), the records are read from the
    pages too."""
    with _mapped(path) as data:
        page_size = int.from_bytes(data[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        if page_size < 512 or len(data) < page_size:
            _scan_raw_bytes(col, file, data)
            return
        live_read = _scan_sqlite_logical(col, file, path)
        walker = _SqlitePages(col, page_size, data[20])
        n_pages = len(data) // page_size
        free = _freelist(data, page_size, n_pages)
        for pgno in range(1, n_pages + 1):
            page = data[(pgno - 1) * page_size : pgno * page_size]
            if page.count(0) == len(page):
                continue
            walker.page(_PageCtx(file, f"page {pgno}"), page, pgno, pgno in free, cells=not live_read)


def _scan_sqlite_logical(col: _Collector, file: str, path: Path) -> bool:
    """Every text column of every table of the database file itself (not its WAL), read through
    SQLite; False if SQLite could not read it all."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)  # creates no -wal/-shm
    except sqlite3.Error:
        return False
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            cur = db.execute(f"SELECT * FROM {quoted}")
            names = [d[0] for d in cur.description]
            for row in cur:
                for name, value in zip(names, row, strict=True):
                    if isinstance(value, str):
                        col.scan(file, value, f"table {table}, column {name}")
                    elif isinstance(value, bytes):
                        col.scan_runs(file, value, 0, f"table {table}, column {name},")
    except sqlite3.Error:
        return False
    finally:
        db.close()
    return True


def _scan_wal(col: _Collector, file: str, path: Path) -> None:
    """A write-ahead log: every frame's page image, records field by field (old frames included:
    they are on disk until the log is truncated)."""
    reserved = 0
    try:
        head = _head(path.with_name(path.name[: -len("-wal")]), 100)
        if head.startswith(_SQLITE_MAGIC):
            reserved = head[20]
    except IndexError:
        pass
    with _mapped(path) as data:
        page_size = struct.unpack_from(">I", data, 8)[0] if len(data) >= 32 else 0
        if not 512 <= page_size <= 65536 or struct.unpack_from(">I", data, 0)[0] not in _WAL_MAGICS:
            _scan_raw_bytes(col, file, data)
            return
        walker = _SqlitePages(col, page_size, reserved)
        frame, pos = 0, 32
        while pos + 24 + page_size <= len(data):
            frame += 1
            (pgno,) = struct.unpack_from(">I", data, pos)
            page = data[pos + 24 : pos + 24 + page_size]
            if page.count(0) != len(page):
                walker.page(_PageCtx(file, f"WAL frame {frame} (page {pgno})"), page, pgno, False)
            pos += 24 + page_size
        if pos < len(data):
            col.scan_runs(file, data[pos:], pos, "WAL tail at")


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap | bytes]:
    """The file's bytes, mapped (a chunk store can be larger than the memory an audit should take)."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            yield mm


def _scan_raw_bytes(col: _Collector, file: str, data: bytes | mmap.mmap) -> None:
    for start in range(0, len(data), WINDOW):
        col.scan_runs(file, data[start : start + WINDOW + _OVERLAP], start, "at")


# -- JSON and BMX string tables --------------------------------------------------------------------


def _json_lines(value: Any, key: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_lines(v, str(k))
            if isinstance(k, str) and not isinstance(v, dict | list):
                yield f"{k}: {v}"
    elif isinstance(value, list):
        for v in value:
            yield from _json_lines(v, key)
    elif isinstance(value, str):
        yield value


def _scan_json(col: _Collector, file: str, path: Path) -> bool:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    col.scan(file, "\n".join(_json_lines(value)), "JSON")
    return True


def _load_npy(path: Path) -> Any:
    import numpy as np

    return np.load(path, allow_pickle=False)


def _scan_string_table(col: _Collector, root: Path, blob: Path) -> list[str] | None:
    """Decode a ``*_blob.npy`` + ``*_off.npy`` pair (code-point offsets) and scan it string by string."""
    off = blob.with_name(blob.name.replace("_blob.npy", "_off.npy"))
    try:
        text = _load_npy(blob).tobytes().decode("utf-8", "replace")
        offsets = _load_npy(off).tolist()
    except (OSError, ValueError):
        return None
    strings = [text[a:b] for a, b in itertools.pairwise(offsets)]
    col.scan(_rel(root, blob), "\n".join(s for s in strings if not s.startswith("\x00")), "string table")
    return strings


def _scan_bmx_generation(col: _Collector, root: Path, gen: Path) -> None:
    """A BMX generation: string tables term by term, then terms that no live document holds."""
    terms = _scan_string_table(col, root, gen / "terms_blob.npy")
    _scan_string_table(col, root, gen / "ids_blob.npy")
    if terms is None:
        return
    try:
        df = _load_npy(gen / "df.npy").tolist()
    except (OSError, ValueError):
        return
    stale = [t for t, n in zip(terms, df, strict=False) if n <= 0 and t and not t.startswith("\x00")]
    file = _rel(root, gen / "terms_blob.npy")
    for term in stale[:50]:
        col.add(
            file, "stale_term", term, mask(term), f"vocabulary term no live chunk holds ({len(stale)} such)"
        )


# -- the walk --------------------------------------------------------------------------------------


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def _head(path: Path, n: int = 16) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def audit_data_dir(data_dir: Path) -> AuditReport:
    """Scan every file under ``data_dir``; findings in file order."""
    t0 = time.perf_counter()
    root = Path(data_dir).resolve()
    report = AuditReport()
    col = _Collector(root)
    files = list(_files(root))
    blob_files = {p for p in files if p.name.endswith("_blob.npy")}
    bmx_gens = {p.parent for p in blob_files if (p.parent / "terms_blob.npy").exists()}
    off_files = {p.with_name(p.name.replace("_blob.npy", "_off.npy")) for p in blob_files}
    for path in files:
        report.files += 1
        report.bytes += path.stat().st_size
        rel = _rel(root, path)
        head = _head(path)
        try:
            if head.startswith(_SQLITE_MAGIC):
                _scan_sqlite(col, rel, path)
            elif (
                path.name.endswith("-wal")
                and len(head) >= 4
                and int.from_bytes(head[:4], "big") in _WAL_MAGICS
            ):
                _scan_wal(col, rel, path)
            elif path.parent in bmx_gens and path.name == "terms_blob.npy":
                _scan_bmx_generation(col, root, path.parent)
            elif path in blob_files:
                if _scan_string_table(col, root, path) is None:
                    _scan_raw(col, rel, path)
            elif path in off_files and path.parent in bmx_gens:
                continue  # offsets only; read with their blob
            elif path.suffix == ".json" and _scan_json(col, rel, path):
                continue
            else:
                _scan_raw(col, rel, path)
        except OSError as exc:
            col.add(rel, "unreadable", str(exc), f"cannot read: {exc.strerror or exc}", "")
        col.flush()
    col.flush()
    report.findings = col.findings
    report.took_s = time.perf_counter() - t0
    return report
