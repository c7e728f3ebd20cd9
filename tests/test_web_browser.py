"""The web page in a real browser: Chromium driven by Playwright against a live server.

Skipped (with the reason) where Playwright or Chromium is missing; ``make install`` installs both
when it runs as root. Set ``RAG_WEB_SCREENSHOTS=DIR`` to keep a screenshot of each view.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.answer_corpus import NOTES
from tests.ollama_stub import LLMStub, Script
from tests.test_api_common import live_server
from tests.web_corpus import PDF_NAME, PDF_QUESTION, PDF_SENTENCE, web_settings

pytestmark = pytest.mark.slow

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
CHROMIUM = os.environ.get("RAG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no Chromium: install it (apt-get install chromium) or set RAG_CHROMIUM", allow_module_level=True
    )

TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Recorder:
    """Every request the page makes (all frames, all resource types)."""

    def __init__(self, page: Any) -> None:
        self.urls: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))

    def assert_only(self, origin: str) -> None:
        assert self.urls, "no requests recorded"
        outside = [u for u in self.urls if not (u.startswith(origin + "/") or u.startswith("data:"))]
        assert outside == [], f"requests left the server: {outside}"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def shot(page: Any, name: str) -> None:
    folder = os.environ.get("RAG_WEB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_ask_streams_then_a_citation_opens_the_marked_passage(tmp_path: Path, page: Any) -> None:
    tokens = ["Ollama listens", " on port", " 11434", " by default [1]."]
    with (
        LLMStub({"stub-model": 8192}, Script(tokens=tokens, delay=0.4)) as stub,
        live_server(web_settings(tmp_path, stub.url)) as url,
    ):
        requests = Recorder(page)
        page.goto(url + "/")
        question = page.get_by_test_id("question")
        question.fill("Which port does Ollama listen on?")
        question.press("Enter")
        answer = page.get_by_test_id("answer").last
        # streamed: the first words are on screen while the model is still generating
        sync_api.expect(answer).to_contain_text("Ollama listens")
        assert "[1]" not in answer.inner_text()
        sync_api.expect(answer).to_contain_text("11434 by default")
        link = answer.get_by_test_id("citation").first
        sync_api.expect(link).to_have_attribute("title", "ollama-en.md")
        link.click()
        view = page.get_by_test_id("source-view")
        mark = view.locator("mark")
        sync_api.expect(mark).to_have_count(1)
        marked = mark.inner_text()
        assert "Ollama listens on port 11434 by default" in marked
        assert marked.strip() in NOTES["ollama-en.md"]
        sync_api.expect(view.get_by_test_id("heading-path")).to_contain_text("Ollama")
        assert mark.evaluate(
            "m => { const r = m.getBoundingClientRect(); return r.top < window.innerHeight && r.bottom > 0; }"
        )
        shot(page, "ask-markdown")
        # a second turn stays below the first; the follow-up carries the conversation
        question.fill("And how do I change the address?")
        question.press("Enter")
        sync_api.expect(page.get_by_test_id("answer")).to_have_count(2)
        sync_api.expect(page.get_by_test_id("answer").nth(1)).to_contain_text("11434")
        assert page.get_by_test_id("answer").first.inner_text().startswith("Ollama listens")
        follow_up = page.locator(".turn").nth(1).locator(".meta").first
        sync_api.expect(follow_up).to_contain_text("Searched for: ")  # the standalone question
        assert "[object" not in follow_up.inner_text()
        later = [c.body or {} for c in stub.chats()[1:]]
        assert any("Which port" in str(m.get("content")) for b in later for m in b.get("messages", []))
        requests.assert_only(url)


def test_pdf_citation_shows_the_rendered_page(tmp_path: Path, page: Any) -> None:
    # the model is unreachable: the answer is extractive, streamed all the same
    with live_server(web_settings(tmp_path)) as url:
        requests = Recorder(page)
        page.goto(url + "/")
        page.get_by_test_id("question").fill(PDF_QUESTION)
        page.get_by_test_id("question").press("Enter")
        link = page.locator(f'[data-testid="citation"][title^="{PDF_NAME}"]').first
        sync_api.expect(link).to_be_visible()
        link.focus()
        page.keyboard.press("Enter")  # from the keyboard
        view = page.get_by_test_id("source-view")
        img = view.locator("img")
        sync_api.expect(img).to_be_visible()
        assert img.evaluate("i => i.complete && i.naturalWidth > 500")
        sync_api.expect(view.locator("mark").first).to_be_visible()
        marked = " ".join(" ".join(view.locator("mark").all_inner_texts()).split())
        assert "02:30" in marked  # the cited sentence, as the file has it
        paragraph = "Backups are written to the external disk mounted at /mnt/backup. " + PDF_SENTENCE
        assert "".join(marked.split()) in "".join(paragraph.split())
        sync_api.expect(page.locator("#source-title")).to_contain_text("page 2")
        shot(page, "ask-pdf")
        page.keyboard.press("Escape")
        sync_api.expect(page.locator("#source-pane")).to_be_hidden()
        requests.assert_only(url)


def test_documents_lists_status_uploads_and_deletes(tmp_path: Path, page: Any) -> None:
    files = tmp_path / "up"
    files.mkdir()
    (files / "garden.md").write_text("# Garden\n\nWater the tomatoes every morning.\n", encoding="utf-8")
    (files / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    with live_server(web_settings(tmp_path)) as url:
        requests = Recorder(page)
        page.goto(url + "/documents")
        table = page.get_by_test_id("documents")
        row = table.locator(f'tr[data-source="{PDF_NAME}"]')
        sync_api.expect(row.get_by_test_id("status")).to_have_text("indexed")
        sync_api.expect(row.locator("td").nth(3)).to_have_text("2")  # pages
        sync_api.expect(table.locator("tbody tr")).to_have_count(len(NOTES) + 1)
        sync_api.expect(page.locator('[data-part="index"]')).to_contain_text(f"{len(NOTES) + 1} files")
        sync_api.expect(page.locator('[data-part="llm"]')).to_contain_text("unreachable")
        page.get_by_test_id("upload").set_input_files([str(files / "garden.md"), str(files / "broken.pdf")])
        item = page.get_by_test_id("upload-item").first
        sync_api.expect(item).to_have_attribute("data-state", "failed")  # one of the two failed
        sync_api.expect(item.locator(".meta")).to_contain_text("failed: broken.pdf")
        garden = table.locator('tr[data-source="garden.md"]')
        sync_api.expect(garden.get_by_test_id("status")).to_have_text("indexed")
        broken = table.locator('tr[data-source="broken.pdf"]')
        sync_api.expect(broken.get_by_test_id("status")).to_have_text("failed")
        assert broken.locator("td.notes").inner_text().strip() != ""  # and why
        shot(page, "documents")
        page.on("dialog", lambda d: d.accept())
        garden.get_by_test_id("delete").click()
        sync_api.expect(garden).to_have_count(0)
        sync_api.expect(table.locator('tr[data-source="ollama-en.md"]')).to_have_count(1)
        requests.assert_only(url)


def test_search_view_shows_each_legs_score(tmp_path: Path, page: Any) -> None:
    with live_server(web_settings(tmp_path)) as url:
        page.goto(url + "/search")
        page.get_by_test_id("search-query").fill("ollama port")
        page.get_by_test_id("search-query").press("Enter")
        first = page.locator(".hit").first
        sync_api.expect(first.get_by_test_id("hit")).to_contain_text("ollama-en.md")
        sparse = first.locator('dd[data-leg="sparse"]').inner_text()
        assert float(sparse) > 0
        assert first.locator('dd[data-leg="dense"]').inner_text() == "—"  # no dense leg here
        shot(page, "search")
        first.get_by_test_id("hit").click()
        sync_api.expect(page.get_by_test_id("source-view").locator("mark")).to_contain_text("11434")


def test_api_key_is_asked_once_and_kept_for_the_tab(tmp_path: Path, page: Any) -> None:
    with live_server(web_settings(tmp_path, api_key="s3cret-key")) as url:
        page.goto(url + "/")
        page.get_by_test_id("question").fill("Which port does Ollama listen on?")
        page.get_by_test_id("question").press("Enter")
        key = page.get_by_test_id("api-key")
        sync_api.expect(key).to_be_visible()
        key.fill("wrong-key")
        key.press("Enter")
        sync_api.expect(page.locator("#key-error")).to_be_visible()  # refused: asked again
        key.fill("s3cret-key")
        key.press("Enter")
        sync_api.expect(page.get_by_test_id("answer").last).to_contain_text("11434")
        assert page.evaluate("sessionStorage.getItem('rag-api-key')") == "s3cret-key"
        assert page.evaluate("localStorage.getItem('rag-api-key')") is None
        page.goto(url + "/documents")  # same tab: no second prompt
        sync_api.expect(page.get_by_test_id("documents").locator("tbody tr").first).to_be_visible()
        assert not key.is_visible()


def test_docs_load_without_any_outside_request(tmp_path: Path, page: Any) -> None:
    with live_server(web_settings(tmp_path)) as url:
        requests = Recorder(page)
        page.goto(url + "/docs")
        sync_api.expect(page.locator(".swagger-ui .info .title")).to_contain_text("rag-notes")
        sync_api.expect(page.locator(".opblock").first).to_be_visible()
        shot(page, "docs")
        requests.assert_only(url)


def test_chinese_text_and_a_phone_screen(tmp_path: Path, browser: Any) -> None:
    context = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        with live_server(web_settings(tmp_path)) as url:
            page.goto(url + "/")
            sync_api.expect(page.locator('[data-nav="documents"]')).to_have_text("文档")
            page.get_by_test_id("question").fill("Which port does Ollama listen on?")
            page.get_by_test_id("question").press("Enter")
            page.get_by_test_id("citation").first.click()
            sync_api.expect(page.get_by_test_id("source-view").locator("mark")).to_be_visible()
            # nothing is wider than the screen
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            shot(page, "phone-zh")
            page.locator("#lang").click()
            sync_api.expect(page.locator('[data-nav="documents"]')).to_have_text("Documents")
    finally:
        context.close()
