"""PDF generators for tests and benchmarks, built with pymupdf at run time (no PDF files are checked in).

A document is a list of pages; a page is a list of blocks laid out top to bottom:

* :class:`Text` (``heading()``, ``para()``, ``code()`` build the usual kinds), or a plain
  ``(text, font_size)`` tuple;
* :class:`Table`: cell text on a ruled grid (or on shaded cells, or between horizontal rules only);
* :class:`Rules`: vector lines, boxes and fills with text placed among them (rules that may or
  may not make a table);
* :class:`Image`: a raster image and no text at all (what a scanned page looks like).

Text is written run by run: ASCII runs in a base-14 font (Helvetica, Helvetica-Bold or Courier),
other runs in pymupdf's built-in simplified-Chinese font ``china-s``, so mixed Chinese/English
lines come out as several spans, as in PDFs exported by real editors. Lines wrap to the text width
(between CJK characters, or between words). A block that does not fit on its page raises
``ValueError``: the caller decides where pages break.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pymupdf

PAGE_WIDTH = 595.0  # A4 in points
PAGE_HEIGHT = 842.0
MARGIN = 56.0
TEXT_WIDTH = PAGE_WIDTH - 2 * MARGIN
BODY_SIZE = 11.0
HEADING_SIZES = {1: 20.0, 2: 16.0, 3: 13.5}
CJK_FONT = "china-s"


@dataclass(frozen=True)
class Text:
    """A paragraph; ``\\n`` in ``text`` forces a line break (code keeps its lines)."""

    text: str
    size: float = BODY_SIZE
    bold: bool = False
    mono: bool = False


@dataclass(frozen=True)
class Table:
    """A table; ``rows[0]`` is the header row. Every row has the same number of cells.

    ``style``: ``"ruled"`` draws every row and column rule; ``"shaded"`` draws no rule at all,
    only a filled rectangle per cell (rows alternating between two greys, as many reports do);
    ``"rows"`` draws horizontal rules between rows only (no vertical rule, no shading)."""

    rows: Sequence[Sequence[str]]
    size: float = 10.0
    style: str = "ruled"


@dataclass(frozen=True)
class Rules:
    """Vector graphics and text, in points from the block's top-left corner (left margin, top of
    the block): stroked ``lines`` (x0, y0, x1, y1) and ``boxes`` (x0, y0, x1, y1), filled
    rectangles without a border (``fills``), and ``labels`` (x, baseline, text) each written as
    one run (one span, whatever rules it crosses)."""

    height: float
    lines: Sequence[tuple[float, float, float, float]] = ()
    boxes: Sequence[tuple[float, float, float, float]] = ()
    fills: Sequence[tuple[float, float, float, float]] = ()
    labels: Sequence[tuple[float, float, str]] = ()
    size: float = 10.0


@dataclass(frozen=True)
class Image:
    """A grey raster image across the text width, ``height`` points tall, with no text."""

    height: float = 300.0


Block = Text | Table | Image | Rules | tuple[str, float]


def heading(text: str, level: int = 1) -> Text:
    """A heading: bigger font by level (1 largest); level 3 and below are also bold for ASCII runs."""
    return Text(text, size=HEADING_SIZES.get(level, 12.5), bold=level >= 3)


def para(text: str) -> Text:
    return Text(text)


def code(text: str) -> Text:
    return Text(text, size=9.5, mono=True)


def _as_text(block: Block) -> Text | Table | Image | Rules:
    if isinstance(block, tuple):
        return Text(block[0], size=float(block[1]))
    return block


def _runs(line: str) -> list[tuple[str, bool]]:
    """Split ``line`` into (run, is_ascii) pieces."""
    runs: list[tuple[str, bool]] = []
    for ch in line:
        ascii_ch = ord(ch) < 128
        if runs and runs[-1][1] == ascii_ch:
            runs[-1] = (runs[-1][0] + ch, ascii_ch)
        else:
            runs.append((ch, ascii_ch))
    return runs


class _Fonts:
    """Width measurement for the fonts the generator writes with."""

    def __init__(self) -> None:
        import pymupdf

        self._fonts = {name: pymupdf.Font(name) for name in ("helv", "hebo", "cour", CJK_FONT)}
        self._widths: dict[tuple[str, str], float] = {}
        self._wrapped: dict[tuple[str, float, float, bool, bool], list[str]] = {}

    def font(self, name: str) -> pymupdf.Font:
        return self._fonts[name]

    @staticmethod
    def name(ascii_run: bool, *, bold: bool, mono: bool) -> str:
        if not ascii_run:
            return CJK_FONT
        if mono:
            return "cour"
        return "hebo" if bold else "helv"

    def _char_width(self, font: str, ch: str) -> float:
        key = (font, ch)
        w = self._widths.get(key)
        if w is None:
            w = self._widths[key] = self._fonts[font].text_length(ch, fontsize=1.0)
        return w

    def width(self, text: str, size: float, *, bold: bool, mono: bool) -> float:
        """Advance width of ``text`` (base-14 and CID fonts have no kerning, so widths add up)."""
        return size * sum(self._char_width(self.name(ord(ch) < 128, bold=bold, mono=mono), ch) for ch in text)

    def wrap(self, text: str, size: float, width: float, *, bold: bool, mono: bool) -> list[str]:
        """Greedy line filling: CJK characters break anywhere, ASCII breaks after spaces."""
        key = (text, size, width, bold, mono)
        if key not in self._wrapped:
            self._wrapped[key] = self._wrap(text, size, width, bold=bold, mono=mono)
        return self._wrapped[key]

    def _wrap(self, text: str, size: float, width: float, *, bold: bool, mono: bool) -> list[str]:
        lines: list[str] = []
        for hard_line in text.split("\n"):
            tokens: list[str] = []
            for run, is_ascii in _runs(hard_line):
                if is_ascii:
                    tokens.extend(t for t in run.replace(" ", " \0").split("\0") if t)
                else:
                    tokens.extend(run)
            current, current_w = "", 0.0
            for tok in tokens:
                tok_w = self.width(tok, size, bold=bold, mono=mono)
                trailing = self.width(tok[len(tok.rstrip()) :], size, bold=bold, mono=mono)
                if current and current_w + tok_w - trailing > width:
                    lines.append(current.rstrip())
                    current = tok if mono else tok.lstrip()
                    current_w = self.width(current, size, bold=bold, mono=mono)
                else:
                    current += tok
                    current_w += tok_w
            lines.append(current.rstrip())
        return lines


class PageWriter:
    """Lays blocks out on one page from the top margin down."""

    def __init__(self, page: pymupdf.Page, fonts: _Fonts) -> None:
        self.page = page
        self.fonts = fonts
        self.y = MARGIN
        import pymupdf

        # Text and ruling lines are collected and written once per page by close(): one call per
        # text run would re-read the page's font resources every time.
        self.writer = pymupdf.TextWriter(page.rect)
        self.shape = page.new_shape()

    def close(self) -> None:
        self.writer.write_text(self.page)
        self.shape.commit()

    def remaining(self) -> float:
        return PAGE_HEIGHT - MARGIN - self.y

    def height(self, block: Block) -> float:
        b = _as_text(block)
        if isinstance(b, Image | Rules):
            return b.height + 8
        if isinstance(b, Table):
            return sum(h for h in self._row_heights(b)) + 10
        lines = self.fonts.wrap(b.text, b.size, TEXT_WIDTH, bold=b.bold, mono=b.mono)
        return len(lines) * b.size * 1.45 + b.size * 0.8

    def fits(self, block: Block) -> bool:
        return self.height(block) <= self.remaining()

    def add(self, block: Block) -> None:
        if not self.fits(block):
            raise ValueError(f"block does not fit on page {self.page.number + 1}: {block!r:.60}")
        b = _as_text(block)
        if isinstance(b, Image):
            self._add_image(b)
        elif isinstance(b, Rules):
            self._add_rules(b)
        elif isinstance(b, Table):
            self._add_table(b)
        else:
            for line in self.fonts.wrap(b.text, b.size, TEXT_WIDTH, bold=b.bold, mono=b.mono):
                self.y += b.size * 1.45
                self._line(MARGIN, self.y - b.size * 0.3, line, b.size, bold=b.bold, mono=b.mono)
            self.y += b.size * 0.8

    def _line(self, x: float, baseline: float, line: str, size: float, *, bold: bool, mono: bool) -> None:
        for run, is_ascii in _runs(line):
            font = self.fonts.name(is_ascii, bold=bold, mono=mono)
            self.writer.append((x, baseline), run, font=self.fonts.font(font), fontsize=size)
            x += self.fonts.width(run, size, bold=bold, mono=mono)

    def _col_widths(self, table: Table) -> list[float]:
        n = len(table.rows[0])
        need = [
            max(self.fonts.width(str(r[c]), table.size, bold=False, mono=False) for r in table.rows) + 12
            for c in range(n)
        ]
        total = sum(need)
        if total <= TEXT_WIDTH:
            return need
        return [w * TEXT_WIDTH / total for w in need]

    def _row_heights(self, table: Table) -> list[float]:
        widths = self._col_widths(table)
        line_h = table.size * 1.35
        heights = []
        for row in table.rows:
            n_lines = max(
                len(self.fonts.wrap(str(cell), table.size, w - 8, bold=False, mono=False))
                for cell, w in zip(row, widths, strict=True)
            )
            heights.append(n_lines * line_h + 8)
        return heights

    def _add_table(self, table: Table) -> None:
        widths = self._col_widths(table)
        heights = self._row_heights(table)
        x0, y0 = MARGIN, self.y + 4
        x1, y1 = x0 + sum(widths), y0 + sum(heights)
        shape = self.shape
        if table.style == "shaded":
            y = y0
            for r, h in enumerate(heights):
                x = x0
                for w in widths:
                    shape.draw_rect((x, y, x + w, y + h))
                    shape.finish(fill=(0.82, 0.87, 0.93) if r % 2 == 0 else (0.93, 0.95, 0.97), color=None)
                    x += w
                y += h
        else:
            y = y0
            for h in [0.0, *heights]:
                y += h
                shape.draw_line((x0, y), (x1, y))
            if table.style == "ruled":
                x = x0
                for w in [0.0, *widths]:
                    x += w
                    shape.draw_line((x, y0), (x, y1))
            shape.finish(color=(0, 0, 0), width=0.7, closePath=False)
        y = y0
        for row, h in zip(table.rows, heights, strict=True):
            x = x0
            for cell, w in zip(row, widths, strict=True):
                lines = self.fonts.wrap(str(cell), table.size, w - 8, bold=False, mono=False)
                for i, line in enumerate(lines):
                    baseline = y + 4 + (i + 1) * table.size * 1.35 - table.size * 0.35
                    self._line(x + 4, baseline, line, table.size, bold=False, mono=False)
                x += w
            y += h
        self.y = y1 + 6

    def _add_rules(self, rules: Rules) -> None:
        x0, y0 = MARGIN, self.y + 4
        shape = self.shape
        if rules.lines or rules.boxes:
            for ax, ay, bx, by in rules.lines:
                shape.draw_line((x0 + ax, y0 + ay), (x0 + bx, y0 + by))
            for ax, ay, bx, by in rules.boxes:
                shape.draw_rect((x0 + ax, y0 + ay, x0 + bx, y0 + by))
            shape.finish(color=(0, 0, 0), width=0.7, closePath=False)
        for ax, ay, bx, by in rules.fills:
            shape.draw_rect((x0 + ax, y0 + ay, x0 + bx, y0 + by))
            shape.finish(fill=(0.85, 0.88, 0.92), color=None)
        for x, baseline, text in rules.labels:
            font = self.fonts.name(text.isascii(), bold=False, mono=False)
            self.writer.append((x0 + x, y0 + baseline), text, font=self.fonts.font(font), fontsize=rules.size)
        self.y = y0 + rules.height + 4

    def _add_image(self, image: Image) -> None:
        import pymupdf

        pix = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 120, int(image.height / 3)), False)
        pix.clear_with(225)
        pix.set_rect(pymupdf.IRect(10, 10, 110, int(image.height / 3) - 10), (90, 110, 140))
        rect = pymupdf.Rect(MARGIN, self.y + 4, MARGIN + TEXT_WIDTH, self.y + 4 + image.height)
        self.page.insert_image(rect, pixmap=pix, keep_proportion=False)
        self.y = rect.y1 + 4


def _save(doc: pymupdf.Document, user_password: str | None, owner_password: str | None) -> bytes:
    import pymupdf

    doc.subset_fonts()  # embed only the glyphs used, as PDF editors do
    if user_password is None and owner_password is None:
        return doc.tobytes(garbage=3, deflate=True)
    return doc.tobytes(
        garbage=3,
        deflate=True,
        encryption=pymupdf.PDF_ENCRYPT_AES_256,  # type: ignore[attr-defined]
        user_pw=user_password or "",
        owner_pw=owner_password or f"{user_password}-owner",
    )


def make_pdf(
    pages: Sequence[Sequence[Block]],
    *,
    user_password: str | None = None,
    owner_password: str | None = None,
) -> bytes:
    """Build a PDF with one page per entry of ``pages`` and return its bytes.

    ``user_password`` encrypts with AES-256 and makes the file need that password to open;
    ``owner_password`` alone encrypts it but lets anyone open it (a common "protected" PDF).
    """
    import pymupdf

    doc = pymupdf.open()
    fonts = _Fonts()
    for blocks in pages:
        writer = PageWriter(doc.new_page(width=PAGE_WIDTH, height=PAGE_HEIGHT), fonts)
        for block in blocks:
            writer.add(block)
        writer.close()
    data = _save(doc, user_password, owner_password)
    doc.close()
    return data


# --- mixed Chinese/English technical notes for throughput benchmarks -------------------------------

_TOPICS: dict[str, dict[str, list[str]]] = {
    "Docker": {
        "terms": ["docker compose", "Dockerfile", "volume", "bridge network", "healthcheck", "buildx"],
        "cmds": [
            "docker compose up -d --build",
            "docker run --rm -it -v $PWD:/app python:3.11-slim bash",
            "docker logs -f --tail 200 api",
            "docker system prune --volumes",
        ],
    },
    "Ollama": {
        "terms": ["ollama serve", "Modelfile", "num_ctx", "qwen2.5:7b", "keep_alive", "/api/generate"],
        "cmds": [
            "ollama pull qwen2.5:7b-instruct",
            'curl http://localhost:11434/api/generate -d \'{"model": "qwen2.5", "prompt": "hi"}\'',
            "OLLAMA_HOST=0.0.0.0:11434 ollama serve",
            "ollama ps",
        ],
    },
    "GPU": {
        "terms": ["CUDA 12.4", "nvidia-smi", "显存", "fp16", "batch size", "nvidia-container-toolkit"],
        "cmds": [
            "nvidia-smi --query-gpu=name,memory.used --format=csv",
            "docker run --gpus all nvidia/cuda:12.4.1-base-ubuntu22.04 nvidia-smi",
            "python -c 'import torch; print(torch.cuda.is_available())'",
        ],
    },
    "Python": {
        "terms": ["venv", "pip install -e .", "pyproject.toml", "pytest -x", "asyncio", "type hints"],
        "cmds": [
            "python -m venv .venv && . .venv/bin/activate",
            "pip install -r requirements.txt",
            "pytest -q -m 'not slow'",
            "ruff check . && mypy rag",
        ],
    },
}

_SENTENCES = [
    "在本地部署 {term} 的时候，最容易忽略的是权限和路径问题。",
    "如果 {term} 启动失败，先看日志，再检查配置文件里的端口。",
    "我把 {term} 的默认参数记在这里，下次升级时对照着改。",
    "{term} 在 2 核的机器上也能跑，只是速度慢一些，大约要等几十秒。",
    "注意：{term} 和旧版本不兼容，升级前要备份数据目录。",
    "The {term} setting is easy to miss; check it before blaming the network.",
    "实测下来 {term} 的内存占用比文档写的高，留出一倍的余量比较稳妥。",
    "团队里约定：所有 {term} 相关的改动都要写进变更记录。",
    "Keep {term} pinned to a known version so that rebuilds stay reproducible.",
    "遇到 {term} 报错时，把完整的错误信息贴进笔记，方便以后搜索。",
]

_SECTION_TITLES = ["安装与配置", "常见问题", "性能调优", "Troubleshooting", "备份与恢复", "升级记录"]


def _mixed_paragraph(rng: random.Random, topic: str) -> str:
    terms = _TOPICS[topic]["terms"]
    return "".join(rng.choice(_SENTENCES).format(term=rng.choice(terms)) for _ in range(rng.randint(2, 5)))


def _mixed_table(rng: random.Random, topic: str) -> Table:
    rows = [["参数 Parameter", "默认值", "说明 Notes"]]
    for term in rng.sample(_TOPICS[topic]["terms"], 4):
        rows.append([term, str(rng.choice([1, 2, 4, 8, 16, 512, 2048])), f"{topic} 的 {term} 设置，按需调整"])
    return Table(rows)


def make_mixed_pdf(n_pages: int, seed: int = 0) -> bytes:
    """An ``n_pages`` PDF of mixed Chinese/English technical notes (headings, paragraphs,
    code lines, and a ruled table on every fourth page), deterministic for a given ``seed``."""
    return mixed_pdf_with_blocks(n_pages, seed)[0]


def mixed_pdf_with_blocks(n_pages: int, seed: int = 0) -> tuple[bytes, list[list[Block]]]:
    """:func:`make_mixed_pdf` plus the blocks placed on each page (the ground truth)."""
    import pymupdf

    rng = random.Random(seed)
    doc = pymupdf.open()
    fonts = _Fonts()
    topics = list(_TOPICS)
    topic = topics[0]
    placed: list[list[Block]] = []
    for i in range(n_pages):
        writer = PageWriter(doc.new_page(width=PAGE_WIDTH, height=PAGE_HEIGHT), fonts)
        blocks: list[Block] = []
        if i % 8 == 0:
            topic = topics[(i // 8) % len(topics)]
            blocks.append(heading(f"第 {i // 8 + 1} 章 {topic} 笔记", 1))
        blocks.append(heading(f"{i + 1}. {topic} {rng.choice(_SECTION_TITLES)}", 2))
        if i % 4 == 3:
            blocks.append(_mixed_table(rng, topic))
        for fixed in blocks:
            writer.add(fixed)
        while True:
            kind = rng.random()
            block: Block
            if kind < 0.15:
                block = heading(f"{rng.choice(_TOPICS[topic]['terms'])} notes", 3)
            elif kind < 0.35:
                block = code("\n".join(rng.sample(_TOPICS[topic]["cmds"], 2)))
            else:
                block = para(_mixed_paragraph(rng, topic))
            if not writer.fits(block):
                break
            writer.add(block)
            blocks.append(block)
        writer.close()
        placed.append(blocks)
    data = _save(doc, None, None)
    doc.close()
    return data, placed
