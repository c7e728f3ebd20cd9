"""The web page and the source view endpoint over HTTP (the browser tests are in test_web_browser.py)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pymupdf
import pytest

from api.app import create_app
from api.routers import sources
from api.web.router import static_files
from tests.answer_corpus import NOTES
from tests.test_api_common import live_server
from tests.web_corpus import PDF_NAME, PDF_QUESTION, PDF_SENTENCE, web_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_server(web_settings(tmp_path_factory.mktemp("web"))) as url:
        yield url


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=20) as client:
        yield client


def local_refs(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']?([^"' >]+)""", html)


@pytest.mark.parametrize("path", ["/", "/search", "/documents"])
def test_page_has_the_hooks_and_loads_only_from_the_server(http: httpx.Client, path: str) -> None:
    res = http.get(path)
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/html")
    page = res.text
    for hook in ("question", "answer" if path == "/" else "question", "source-view", "documents", "upload"):
        if hook != "answer":  # answers are created per turn by the script
            assert f'data-testid="{hook}"' in page
    assert f'data-view="{path.strip("/") or "ask"}"' in page
    refs = local_refs(page)
    assert "/static/app.js" in refs and "/static/app.css" in refs
    for ref in refs:
        assert ref.startswith(("/", "#", "data:")), ref
        assert not ref.startswith("//"), ref
        if ref.startswith("/static/"):
            assert http.get(ref).status_code == 200, ref
    csp = res.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp


def test_static_files_name_no_other_origin(http: httpx.Client) -> None:
    names = static_files()
    assert {"index.html", "app.js", "app.css"} <= set(names)
    for name in names:
        body = http.get(f"/static/{name}").text
        assert not re.search(r"https?://", body), name
        assert "@import" not in body and "url(" not in body.replace("url(data:", ""), name


def test_docs_are_served_offline(http: httpx.Client) -> None:
    res = http.get("/docs")
    assert res.status_code == 200
    refs = local_refs(res.text)
    assert "/docs/assets/swagger-ui-bundle.js" in refs
    assert not re.search(r"https?://", res.text)
    for ref in refs:
        asset = http.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 500, ref
    assert http.get("/redoc").status_code == 404  # ReDoc only exists on a CDN
    assert http.get("/docs/assets/index.html").status_code == 404  # only the listed files
    assert "/v1/chunks/{chunk_id}/source" in http.get("/openapi.json").json()["paths"]


def _hit(http: httpx.Client, query: str, source: str) -> dict[str, Any]:
    hits = http.post("/v1/search", json={"query": query, "k": 10, "mode": "sparse"}).json()["hits"]
    return next(h for h in hits if h["source"] == source)


def test_markdown_source_marks_the_chunk_at_its_offsets(http: httpx.Client) -> None:
    hit = _hit(http, "ollama port 11434", "ollama-en.md")
    res = http.get(f"/v1/chunks/{hit['chunk_id']}/source")
    assert res.status_code == 200
    s = res.json()
    assert s["source"] == "ollama-en.md" and s["format"] != "pdf"
    assert s["text"][s["start"] : s["end"]] == hit["text"] == s["chunk_text"]
    assert "11434" in s["text"][s["start"] : s["end"]]
    assert s["heading_path"][0] == "Ollama"
    assert s["text"].strip() == NOTES["ollama-en.md"].strip()


def test_unknown_chunk_is_404(http: httpx.Client) -> None:
    res = http.get("/v1/chunks/nope/source")
    assert res.status_code == 404
    assert "nope" in res.json()["error"]["message"]


def _png(data_url: str) -> pymupdf.Pixmap:
    assert data_url.startswith("data:image/png;base64,")
    return pymupdf.Pixmap(base64.b64decode(data_url.split(",", 1)[1]))


def _yellow(pix: pymupdf.Pixmap) -> int:
    samples, n = pix.samples, pix.n
    return sum(
        1
        for i in range(0, len(samples), n * 3)  # every third pixel is enough
        if samples[i] > 200 and samples[i + 1] > 170 and samples[i + 2] < 140
    )


def test_pdf_source_is_the_page_rendered_with_the_quote_highlighted(http: httpx.Client) -> None:
    hit = _hit(http, "rsync backup snapshots", PDF_NAME)
    assert hit["page"] == 2
    quote = "runs every night at 02:30 and keeps fourteen snapshots."
    s = http.get(f"/v1/chunks/{hit['chunk_id']}/source", params={"quote": quote}).json()
    assert s["format"] == "pdf" and s["page"] == 2 and s["pages"] == 2
    assert s["error"] is None
    pix = _png(s["image"])
    assert pix.width > 500 and pix.height > 700
    assert _yellow(pix) > 200  # the highlight is drawn on the page
    # the quote shown is read back from the file, and the marks cover it in the page text
    assert s["quote"] == quote
    marked = "".join(s["page_text"][a:b] for a, b in s["marks"])
    assert " ".join(marked.split()) == quote
    assert "Restores are started by hand" in s["page_text"]
    assert "This manual describes" not in s["page_text"]  # page 1 is not shown


def test_pdf_quote_not_on_the_page_highlights_the_chunk(http: httpx.Client) -> None:
    hit = _hit(http, "rsync backup snapshots", PDF_NAME)
    s = http.get(f"/v1/chunks/{hit['chunk_id']}/source", params={"quote": "words that are nowhere"}).json()
    assert s["error"] is None
    assert PDF_SENTENCE in " ".join(s["quote"].split())
    assert _yellow(_png(s["image"])) > 200


def test_pdf_without_its_file_shows_the_stored_text(tmp_path: Path) -> None:
    settings = web_settings(tmp_path)
    (tmp_path / "notes" / PDF_NAME).unlink()
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        hit = _hit(client, "rsync backup snapshots", PDF_NAME)
        s = client.get(f"/v1/chunks/{hit['chunk_id']}/source").json()
    assert s["image"] is None
    assert "no longer" in s["error"]
    assert PDF_SENTENCE in s["page_text"]
    assert s["marks"] == [[0, len(s["page_text"])]]


def test_ask_stream_cites_the_pdf_page(http: httpx.Client) -> None:
    with http.stream("POST", "/v1/ask", json={"question": PDF_QUESTION, "stream": True}) as res:
        assert res.status_code == 200
        body = "".join(res.iter_text())
    assert "event: token" in body and "event: final" in body
    assert f'"source": "{PDF_NAME}", "page": 2' in body


def test_source_view_needs_a_key_when_the_server_has_one(tmp_path: Path) -> None:
    settings = web_settings(tmp_path, api_key="s3cret-key")
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as c:
        assert c.get("/").status_code == 200  # the page itself holds nothing secret
        assert c.get("/static/app.js").status_code == 200
        assert c.get("/docs").status_code == 200
        assert c.get("/v1/chunks/x/source").status_code == 401
        auth = {"Authorization": "Bearer s3cret-key"}
        hits = c.post("/v1/search", json={"query": "ollama", "mode": "sparse"}, headers=auth).json()["hits"]
        res = c.get(f"/v1/chunks/{hits[0]['chunk_id']}/source", headers=auth)
        assert res.status_code == 200


def test_create_app_serves_the_page_without_a_started_index(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from rag.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "empty"))
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        assert client.get("/documents").status_code == 200


def test_a_chinese_quote_wrapped_over_lines_is_found_and_read_back() -> None:
    from ingest.pdf import extract_pdf
    from tests.factories_pdf import heading, make_pdf, para

    body = (
        "用 docker 在 GPU 上启动 ollama 的方法是先安装 nvidia-container-toolkit，然后运行 docker run -d "
        "--gpus all -p 11434:11434 --name ollama ollama/ollama 命令，启动后用 ollama ps 查看模型是否在"
        "显卡上运行，默认端口是一万一千四百三十四。这一段文字故意写得很长，以便它在页面上折成好几行。"
    )
    data = make_pdf([[heading("部署笔记"), para(body), para("另一段无关的文字。")]])
    text = extract_pdf(data).text
    page = pymupdf.open(stream=data)[0]
    quote = "启动后用 ollama ps 查看模型是否在显卡上运行，默认端口是一万一千四百三十四。"
    glyphs = sources.PageGlyphs.read(page)
    ranges = sources.locate(glyphs, text, quote)
    assert len({round(r[1]) for r in glyphs.rects(ranges)}) >= 2  # the quote runs over two lines
    assert sources.quoted(glyphs.text, glyphs.marks(ranges)) == quote
    # a quote that is not on the page: the chunk's own text is highlighted instead
    ranges = sources.locate(glyphs, "# 部署笔记\n\n" + body, "不在页面上的句子。")
    shown = sources.quoted(glyphs.text, glyphs.marks(ranges))
    assert body.replace(" ", "") in shown.replace(" ", "")
    assert "另一段" not in shown


def test_redacted_secrets_stay_hidden_on_the_rendered_page(tmp_path: Path) -> None:
    from tests.answer_corpus import index_notes
    from tests.factories_pdf import heading, make_pdf, para

    password, token = "hunter2xyz", "sk-proj-4fGh7Jk2Lm9Np3Qr5St8Uv1Wx6Yz0Ab"
    root = tmp_path / "notes"
    root.mkdir()
    data = make_pdf(
        [
            [
                heading("Nightly job"),
                para(
                    f"The nightly job logs in with password {password} and token {token}. Then it runs rsync."
                ),
                para("The rsync step copies the photo library to the backup disk."),
            ]
        ]
    )
    (root / "ops.pdf").write_bytes(data)
    settings = index_notes(tmp_path)
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=20) as client:
        hit = _hit(client, "nightly job rsync photo library", "ops.pdf")
        assert password not in hit["text"] and "[REDACTED:" in hit["text"]
        res = client.get(f"/v1/chunks/{hit['chunk_id']}/source", params={"quote": "Then it runs rsync."})
    assert password not in res.text and token not in res.text and "4fGh7Jk2" not in res.text
    s = res.json()
    assert s["error"] is None and s["quote"] == "Then it runs rsync."
    assert "The nightly job logs in with password" in " ".join(s["page_text"].split())
    assert "photo library" in s["page_text"]

    def black(pix: pymupdf.Pixmap) -> int:
        samples, n = pix.samples, pix.n
        return sum(1 for i in range(0, len(samples), n) if max(samples[i : i + 3]) < 30)

    plain = black(pymupdf.open(stream=data)[0].get_pixmap(dpi=sources.PAGE_DPI))
    assert black(_png(s["image"])) > plain + 3000  # two filled boxes where the values were
