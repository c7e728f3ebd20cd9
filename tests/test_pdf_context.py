"""Chunks carry their context: the document title, the page's running header, the header row of the
table a chunk starts inside. The context is indexed (``index_text``), never part of the text: chunk
text and offsets are the same with and without it.

PDFs are generated with ``tests.factories_pdf``; running headers, page numbers and metadata are
written onto the pages afterwards with PyMuPDF.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

import ingest.pipeline
from ingest.chunking import document_title, table_header_at
from ingest.pdf import _MarginLine, extract_pdf, running_headers
from ingest.pipeline import chunk_context, chunk_document, redact_document, sync_paths
from rag.engine import Engine
from rag.models import ExtractedDocument, PageSpan
from rag.settings import ChunkingSettings, Settings
from rag.store import ChunkStore
from tests.factories_pdf import PAGE_HEIGHT, Table, heading, make_pdf, para

BODY = [
    "The agency cut the average processing time for retirement claims by eleven days this year.",
    "Customer satisfaction with the benefits portal rose after the redesign of its login page.",
    "Staff turnover stayed below the target for the third year in a row despite hiring limits.",
    "The inspector general closed nine audits and opened four new reviews of contract spending.",
]


def _decorate(
    data: bytes,
    *,
    header: str | None,
    footer: str | None = "Page {n}",
    title: str | None = None,
    header_pages: Sequence[int] | None = None,
) -> bytes:
    """Write ``header`` at the top and ``footer`` (``{n}`` = page number) at the bottom of pages,
    and ``title`` into the metadata."""
    import pymupdf

    doc = pymupdf.open(stream=data, filetype="pdf")
    for i, page in enumerate(doc):
        if header and (header_pages is None or i + 1 in header_pages):
            page.insert_text((56, 36), header, fontsize=9)
        if footer:
            page.insert_text((280, PAGE_HEIGHT - 24), footer.format(n=i + 1), fontsize=9)
    if title is not None:
        doc.set_metadata({"title": title})
    out = doc.tobytes()
    doc.close()
    return bytes(out)


def _report(
    company: str, *, pages: int = 5, meta_title: str | None = None, header: str | None = None
) -> bytes:
    """A report of ``pages`` pages: a cover page whose largest line names it, then body pages (the
    same sentences in every report) and a long table on the last page."""
    cover = [heading(f"{company} Annual Performance Report", 1), para("Fiscal Year 2031")]
    sections = ["Retirement", "Benefits", "Workforce", "Oversight", "Hiring", "Training", "Pay", "Leave"]
    body = [[heading(sections[i], 1), para(" ".join(BODY) * 2)] for i in range(pages - 2)]
    rows = [["Measure", "FY 2030 Target", "FY 2031 Actual"]]
    rows += [[f"Indicator number {i} of the plan", f"{90 + i}%", f"{88 + i}%"] for i in range(14)]
    last = [heading("Results", 1), Table(rows)]
    data = make_pdf([cover, *body, last])
    return _decorate(
        data,
        header=header if header is not None else f"{company} FY 2031 Annual Performance Report",
        title=meta_title,
    )


def _chunks(doc: ExtractedDocument, *, context: bool = True, size: int = 60, source: str = "r.pdf") -> list:
    chunking = ChunkingSettings(size=size, overlap=8, context=context)
    return chunk_document(doc, doc_id="d", source=source, chunking=chunking)


# --- extraction: title and running headers ------------------------------------------------------------


def test_running_header_found_page_numbers_left_out() -> None:
    doc = extract_pdf(_report("Contoso", pages=6))
    assert doc.pages is not None and len(doc.pages) == 6
    assert set(doc.running_headers) == set(range(1, 7))
    for page, headers in doc.running_headers.items():
        assert headers == ("Contoso FY 2031 Annual Performance Report",), page
    # the footer "Page N" is on every page at the same height: a page number, not a header
    assert not any("Page" in h for hs in doc.running_headers.values() for h in hs)
    # the header line stays in the page text where it was printed
    assert doc.text.count("Contoso FY 2031 Annual Performance Report") == 6


def test_title_from_metadata_when_meaningful_else_first_page() -> None:
    named = extract_pdf(_report("Contoso", meta_title="Contoso Annual Report for Fiscal Year 2031"))
    assert named.title == "Contoso Annual Report for Fiscal Year 2031"
    for junk in ("HHS2022B", "Microsoft Word - report_final.docx", "report.pdf", ""):
        doc = extract_pdf(_report("Contoso", meta_title=junk))
        assert doc.title == "Contoso Annual Performance Report", junk  # the cover's largest line


def test_running_header_detection_is_not_fooled_by_page_numbers() -> None:
    def margins(texts: Sequence[str], *, top: bool = True) -> list[_MarginLine]:
        return [_MarginLine(i + 1, top, 30.0, t) for i, t in enumerate(texts)]

    n = 8
    # bare numbers, "Page N", "N of M", "第 N 页": page numbers, never headers
    for form in ("{n}", "Page {n}", "{n} of 8", "- {n} -", "Page {n} of 8", "第 {n} 页"):
        found = running_headers(margins([form.format(n=i + 1) for i in range(n)], top=False), n)
        assert found == {}, form
    # a header with the page number in it keeps its words, loses the number
    found = running_headers(margins([f"Annual Report 2031 – {i + 1}" for i in range(n)]), n)
    assert found == {p: ("Annual Report 2031",) for p in range(1, n + 1)}
    # numbered content in the margin ("Table 1.1", "Table 2.3") is not a running header
    assert running_headers(margins([f"Table {i}.{i + 2}" for i in range(n)]), n) == {}
    # a line at a different height on each page is not one either
    moving = [_MarginLine(i + 1, True, 30.0 + 9 * i, "Annual Report 2031") for i in range(n)]
    assert running_headers(moving, n) == {}
    # nor is a line on too few pages
    assert running_headers(margins(["Annual Report 2031"] * 2), n) == {}
    # a number that changes but not with the page ("Goal 3" on pages 1-4, "Goal 4" on 5-8) is no page number
    assert running_headers(margins([f"Goal {3 + i // 4}" for i in range(n)]), n) == {}
    # the same number on every page (a year) is a word, not a page number
    same = running_headers(margins(["Budget FY 2031"] * n), n)
    assert same == {p: ("Budget FY 2031",) for p in range(1, n + 1)}
    # page numbers that start at 5 (front matter unnumbered) are page numbers all the same
    offset = running_headers(margins([f"Budget FY 2031 | {i + 5}" for i in range(n)]), n)
    assert offset == {p: ("Budget FY 2031",) for p in range(1, n + 1)}


def test_header_on_some_pages_only_belongs_to_those_pages() -> None:
    data = make_pdf([[para(s)] for s in BODY * 2])  # 8 pages
    data = _decorate(data, header="Chapter Two: Benefits", header_pages=[3, 4, 5, 6, 7])
    doc = extract_pdf(data)
    assert {p for p, hs in doc.running_headers.items() if "Chapter Two: Benefits" in hs} == {3, 4, 5, 6, 7}


# --- chunks: offsets unchanged, context indexed ---------------------------------------------------------


def test_context_changes_no_text_and_no_offset() -> None:
    doc = redact_document(extract_pdf(_report("Contoso", pages=6)))
    with_ctx = _chunks(doc, context=True)
    without = _chunks(doc, context=False)
    assert [(c.start, c.end, c.text, c.page, c.heading_path) for c in with_ctx] == [
        (c.start, c.end, c.text, c.page, c.heading_path) for c in without
    ]
    for c in with_ctx:
        assert c.text == doc.text[c.start : c.end]
        assert c.context not in c.text or not c.context
        assert c.index_text().endswith(c.text)
        assert c.index_text(with_context=False) == without[c.ordinal].index_text()
    assert all(c.context == "" for c in without)
    # ids change exactly where a context was added (so the indexes take the new text)
    for a, b in zip(with_ctx, without, strict=True):
        assert (a.chunk_id == b.chunk_id) == (a.context == "")
    # body chunks (not on the cover, not holding the header line) carry title and header
    body = [c for c in with_ctx if c.page and c.page > 1 and "Contoso" not in c.text]
    assert body
    for c in body:
        assert "Contoso Annual Performance Report" in c.context
        assert "Contoso" in c.index_text() and "Contoso" not in c.text


def test_table_rows_carry_their_column_headers() -> None:
    doc = redact_document(extract_pdf(_report("Contoso", pages=3)))
    chunks = _chunks(doc, size=40)
    table = [c for c in chunks if c.text.lstrip().startswith("| Indicator number")]
    assert len(table) >= 2  # the table was cut: some chunks start inside it, below its header
    for c in table:
        assert "Measure | FY 2030 Target | FY 2031 Actual" in c.context
        assert "FY 2030 Target" not in c.text
    header_chunk = next(c for c in chunks if "| Measure |" in c.text)
    assert "FY 2030 Target" not in header_chunk.context  # it holds the header row itself


def test_context_is_findable_by_search(tmp_path: Path) -> None:
    """Two reports with the same body text: only the context tells their body chunks apart."""
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(_report("Contoso", pages=5))
    (folder / "b.pdf").write_bytes(_report("Northwind", pages=5))
    query = "Northwind customer satisfaction benefits portal"

    def scores(context: bool) -> dict[tuple[str, str], float]:
        """(source, text) -> sparse score of the body chunks whose text names neither report."""
        settings = Settings(data_dir=tmp_path / f"data-{context}")
        settings.chunking.size = 60
        settings.chunking.context = context
        with Engine.open(settings, create=True) as engine:
            sync_paths([folder], settings, engine.store)
            engine.store.acquire_writer_lock()
            try:
                engine.sync()
            finally:
                engine.store.release_writer_lock()
            hits = engine.search(query, k=200, mode="sparse")
        return {
            (h.chunk.source, h.chunk.text): h.score
            for h in hits
            if "Northwind" not in h.chunk.text and "Contoso" not in h.chunk.text
        }

    with_ctx = scores(True)
    twins = [text for source, text in with_ctx if source == "b.pdf" and ("a.pdf", text) in with_ctx]
    assert len(twins) >= 3  # the same body text in both reports
    # with context, each Northwind body chunk outranks its Contoso twin ...
    assert all(with_ctx[("b.pdf", t)] > with_ctx[("a.pdf", t)] for t in twins)
    best = max(with_ctx, key=lambda key: with_ctx[key])
    assert best[0] == "b.pdf"
    # ... without it, the twins score the same: nothing in them names the report
    without = scores(False)
    assert all(without[("b.pdf", t)] == pytest.approx(without[("a.pdf", t)]) for t in twins)


# --- markdown and text ----------------------------------------------------------------------------------


def test_markdown_title_and_file_name() -> None:
    text = "# Ollama 部署笔记\n\n开头。\n\n# 附录\n\n端口是 11434，模型目录在 /root/.ollama。\n"
    assert document_title(text, "markdown") == "Ollama 部署笔记"
    assert document_title("```\n# not a title\n```\n\n## 小节\n\n正文。\n", "markdown") is None
    assert document_title("---\ntitle: 'GPU 笔记'\ntags: [a]\n---\n\n# 别的\n", "markdown") == "GPU 笔记"
    assert document_title("Docker notes\n\nFirst paragraph here.\n", "text") == "Docker notes"
    assert document_title("A sentence, not a title.\n\nBody.\n", "text") is None

    doc = ExtractedDocument(text=text, format="markdown")
    chunks = chunk_document(doc, doc_id="d", source="notes/ollama.md", chunking=ChunkingSettings())
    appendix = next(c for c in chunks if c.heading_path == ("附录",))
    assert appendix.context == "Ollama 部署笔记"  # the document's title, not in its heading path
    first = next(c for c in chunks if c.heading_path == ("Ollama 部署笔记",))
    assert first.context == ""  # already in the heading path
    # no heading at all: the file's name stands for the title
    plain = ExtractedDocument(text="只有正文，没有标题。\n", format="markdown")
    (only,) = chunk_document(plain, doc_id="d", source="docker-gpu_notes.md", chunking=ChunkingSettings())
    assert only.context == "docker gpu notes"
    # an eval corpus entry has no file name
    (entry,) = chunk_document(plain, doc_id="d", source="DEV_0", chunking=ChunkingSettings())
    assert entry.context == ""


def test_table_header_at() -> None:
    text = "Intro.\n\n| Name | Port |\n| --- | --- |\n| ollama | 11434 |\n| qdrant | 6333 |\n\nAfter.\n"
    assert table_header_at(text, text.index("| qdrant")) == "Name | Port"
    assert table_header_at(text, text.index("| ollama")) == "Name | Port"
    assert table_header_at(text, text.index("| Name")) is None  # the header row itself
    assert table_header_at(text, text.index("After")) is None
    assert table_header_at(text, 0) is None
    no_delimiter = "| a | b |\n| c | d |\n"
    assert table_header_at(no_delimiter, no_delimiter.index("| c")) is None
    crlf = text.replace("\n", "\r\n")
    assert table_header_at(crlf, crlf.index("| qdrant")) == "Name | Port"
    assert table_header_at(crlf, crlf.index("After")) is None
    # two tables: each body gets its own header; an escaped pipe stays in its cell
    two = text + "\n| Key \\| alias | Value |\n|:--|--:|\n| a | 1 |\n"
    assert table_header_at(two, two.index("| ollama")) == "Name | Port"
    assert table_header_at(two, two.index("| a | 1")) == "Key | alias | Value"


def test_chunks_deep_in_a_long_table_keep_its_header() -> None:
    rows = "".join(f"| host-{i} | 10.0.{i // 250}.{i % 250} | rack {i % 7} |\n" for i in range(3000))
    text = "# Inventory\n\n| Host | Address | Rack |\n| --- | --- | --- |\n" + rows
    doc = ExtractedDocument(text=text, format="markdown")
    chunks = chunk_document(doc, doc_id="d", source="hosts.md", chunking=ChunkingSettings(size=64, overlap=0))
    assert len(chunks) > 100
    assert all(c.text == text[c.start : c.end] for c in chunks)
    for c in chunks[1:]:
        assert c.context == "Host | Address | Rack", c.ordinal
    assert "Host | Address" not in chunks[0].context  # it holds the header row


def test_chunk_context_dedupes_and_caps() -> None:
    assert chunk_context(["Annual Report 2031", "annual report 2031"], (), "body") == "Annual Report 2031"
    # a header whose words the title already has adds nothing
    assert chunk_context(["OPM Annual Report 2031", "Report 2031"], (), "x") == "OPM Annual Report 2031"
    # nor does one in the heading path or in the chunk's own text
    assert chunk_context(["Benefits"], ("Results", "Benefits"), "x") == ""
    assert chunk_context(["Retirement claims"], (), "Retirement claims were processed.") == ""
    long = " ".join(f"word{i}" for i in range(200))
    capped = chunk_context([long], (), "x")
    assert len(capped) <= ingest.pipeline.CONTEXT_MAX_CHARS and long.startswith(capped)
    assert capped.split()[-1].startswith("word")  # cut between words


# --- an existing data dir is re-processed ----------------------------------------------------------------


def test_existing_data_dir_gains_context_on_the_next_ingest(tmp_path: Path) -> None:
    """A data dir written before chunks had context (schema v2, extractor version 1): opening it
    adds the column, the next ingest re-processes every document and the legs index the context."""
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(_report("Contoso", pages=4))
    (folder / "ports.md").write_text("## Port\n\nollama listens on 11434.\n", encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "data")
    settings.chunking.size = 60
    old = settings.model_copy(deep=True)
    old.chunking.context = False

    with Engine.open(old, create=True) as engine:
        sync_paths([folder], old, engine.store)
        engine.store.acquire_writer_lock()
        try:
            engine.sync()
        finally:
            engine.store.release_writer_lock()
        old_ids = engine.store.chunk_ids()
        assert not engine.search("Contoso retirement claims", k=3, mode="sparse")[0].chunk.context
    # make it what the previous release wrote: no context column, schema v2, the old fingerprint
    fingerprint = json.dumps({"v": 1, "chunk": [60, 50], "redact": True, "pdf": "text"}, sort_keys=True)
    db = sqlite3.connect(settings.data_dir / "chunks.sqlite3")
    db.execute("ALTER TABLE chunks DROP COLUMN context")
    db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    db.execute("UPDATE documents SET pipeline=?", (fingerprint,))
    db.commit()
    db.close()

    with Engine.open(settings) as engine:
        assert {c.context for b in engine.store.iter_chunks() for c in b} == {""}  # migrated, empty
        report = sync_paths([folder], settings, engine.store)
        assert (report.updated, report.unchanged, report.failed) == (2, 0, [])
        engine.store.acquire_writer_lock()
        try:
            engine.sync()
        finally:
            engine.store.release_writer_lock()
        chunks = [c for b in engine.store.iter_chunks() for c in b]
        text = {d.doc_id: engine.store.document_text(d.doc_id) or "" for d in engine.store.documents()}
        assert all(c.text == text[c.doc_id][c.start : c.end] for c in chunks)
        pdf_body = [c for c in chunks if c.source == "a.pdf" and "Contoso" not in c.text]
        assert pdf_body and all("Contoso" in c.context for c in pdf_body)
        md = [c for c in chunks if c.source == "ports.md"]
        assert [c.context for c in md] == ["ports"]  # the file name; "Port" is in the heading path
        new_ids = engine.store.chunk_ids()
        assert new_ids != old_ids and {c.chunk_id for c in pdf_body}.isdisjoint(old_ids)
        # the sparse leg dropped the old ids and finds a body page by the report's name
        hits = engine.search("Contoso retirement claims", k=3, mode="sparse")
        assert hits and {h.chunk.chunk_id for h in hits} <= new_ids
        assert any("Contoso" not in h.chunk.text and "Contoso" in h.chunk.context for h in hits)
    with ChunkStore(settings.data_dir) as store:
        again = sync_paths([folder], settings, store)
    assert (again.unchanged, again.updated) == (2, 0)  # done once


def test_title_and_headers_are_redacted_like_the_text() -> None:
    key = "sk-proj-4fQ2mZx9LkP7wR3tYh8VbN1cJd6EsA0u"
    body = f"Body with OPENAI_API_KEY={key}"
    doc = ExtractedDocument(
        text=body,
        format="pdf",
        pages=[PageSpan(1, 0, len(body))],
        title=f"Setup notes OPENAI_API_KEY={key}",
        running_headers={1: (f"OPENAI_API_KEY={key} internal",)},
    )
    out = redact_document(doc)
    assert key not in out.text and key not in (out.title or "")
    assert all(key not in h for hs in out.running_headers.values() for h in hs)
    assert "[REDACTED:" in (out.title or "")
    assert sum(out.redactions.values()) == 1  # the copies in the title and header are not counted again
    (chunk,) = chunk_document(out, doc_id="d", source="s.pdf", chunking=ChunkingSettings())
    assert key not in chunk.index_text()


def test_markdown_mode_finds_title_and_running_header() -> None:
    pytest.importorskip("pymupdf4llm")
    doc = extract_pdf(_report("Contoso", pages=5), mode="markdown")
    assert doc.title == "Contoso Annual Performance Report"  # the first page's first "#" heading
    assert set(doc.running_headers) == set(range(1, 6))
    assert all(hs == ("Contoso FY 2031 Annual Performance Report",) for hs in doc.running_headers.values())
