"""The HTTP API through FastAPI's TestClient: contracts, auth, validation, uploads, deletes, errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.serving import ServingEngine
from rag.errors import StoreError
from rag.llm import clear_context_cache
from rag.retrieval.legs import DenseLeg, SparseLeg
from tests.ollama_stub import LLMStub, Script, closed_port
from tests.test_api_common import MODEL, QUESTION, HashingEmbedder, api_settings, wait_job

HIT_KEYS = {"rank", "chunk_id", "doc_id", "source", "page", "start", "end", "text", "score", "scores"}


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_context_cache()
    yield
    clear_context_cache()


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    with LLMStub({MODEL: 8192}, Script(tokens=["Ollama listens on port 11434", " [1]."])) as s:
        yield s


@pytest.fixture
def client(tmp_path: Path, stub: LLMStub) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(tmp_path, stub.url))) as c:
        yield c


def engine_of(client: TestClient) -> ServingEngine:
    engine = client.app.state.service.engine()  # type: ignore[attr-defined]
    assert isinstance(engine, ServingEngine)
    return engine


def upload(client: TestClient, *files: tuple[str, bytes], headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/v1/documents",
        files=[("files", (name, data, "text/markdown")) for name, data in files],
        headers=headers,
    )


# -- contracts -------------------------------------------------------------------------------------


def test_search_has_the_cli_contract(client: TestClient) -> None:
    res = client.post("/v1/search", json={"query": "ollama port 11434", "k": 3, "mode": "sparse"})
    assert res.status_code == 200
    body = res.json()
    assert set(body) == {"query", "mode", "took_ms", "hits"}
    assert body["query"] == "ollama port 11434" and body["mode"] == "sparse"
    assert 1 <= len(body["hits"]) <= 3
    assert set(body["hits"][0]) >= HIT_KEYS
    assert body["hits"][0]["source"] == "ollama-en.md" and body["hits"][0]["rank"] == 1
    assert set(body["hits"][0]["scores"]) == {"sparse", "dense", "graph", "fused"}


def test_ask_json_is_the_rag_ask_object(client: TestClient) -> None:
    res = client.post("/v1/ask", json={"question": QUESTION, "k": 3})
    assert res.status_code == 200
    body = res.json()
    assert {"answer", "citations", "hits", "llm"} <= set(body)
    assert body["answer"] == "Ollama listens on port 11434 [1]."
    assert body["llm"] == {"backend": "ollama", "model": MODEL}
    assert body["citations"][0]["source"] == "ollama-en.md" and "11434" in body["citations"][0]["quote"]


def test_ask_no_llm_is_extractive(client: TestClient, stub: LLMStub) -> None:
    body = client.post("/v1/ask", json={"question": QUESTION, "no_llm": True}).json()
    assert body["kind"] == "extractive" and body["llm"] is None and not stub.chats()


def test_ask_stream_event_order(client: TestClient) -> None:
    with client.stream("POST", "/v1/ask", json={"question": QUESTION, "stream": True}) as res:
        assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
        text = res.read().decode()
    events = [block.split("\n", 1) for block in text.strip().split("\n\n")]
    names = [head.removeprefix("event: ") for head, _ in events]
    assert names == ["token", "token", "citations", "final"]
    data = [json.loads(rest.removeprefix("data: ")) for _, rest in events]
    assert "".join(d["text"] for d in data[:2]) == data[3]["answer"]
    assert data[2]["citations"] == data[3]["citations"]


def test_model_errors_map_to_status_codes(tmp_path: Path) -> None:
    with LLMStub({"other:1b": 4096}) as other, TestClient(create_app(api_settings(tmp_path, other.url))) as c:
        res = c.post("/v1/ask", json={"question": QUESTION})
        stream = c.post("/v1/ask", json={"question": QUESTION, "stream": True})
    assert res.status_code == 503
    assert res.json()["error"]["type"] == "model_not_found"
    assert "ollama pull" in res.json()["error"]["hint"]
    assert stream.status_code == 503 and stream.json() == res.json()  # before the first event: a plain error


def test_unreachable_model_falls_back_and_health_is_degraded(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with TestClient(create_app(api_settings(tmp_path, url))) as c:
        body = c.post("/v1/ask", json={"question": QUESTION}).json()
        health = c.get("/health")
    assert body["kind"] == "extractive" and "cannot reach Ollama" in body["note"]
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["llm"]["reachable"] is False


def test_health_ok(client: TestClient) -> None:
    res = client.get("/health")
    assert res.status_code == 200
    body = res.json()
    assert body["status"] == "ok" and body["reason"] is None
    assert body["index"]["documents"] == 4 and body["index"]["chunks"] >= 4 and body["index"]["in_sync"]
    assert body["index"]["legs"]["sparse"]["in_sync"] is True
    assert body["vector_store"]["status"] == "disabled"
    assert body["llm"] == {
        "backend": "ollama",
        "model": MODEL,
        "reachable": True,
        "model_present": True,
        "status": "ok",
    }


def test_health_503_when_the_index_cannot_be_opened(tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    db = settings.data_dir / "chunks.sqlite3"
    for extra in settings.data_dir.glob("chunks.sqlite3-*"):
        extra.unlink()
    db.write_bytes(b"this is not a database" * 100)
    with TestClient(create_app(settings)) as c:
        health = c.get("/health")
        search = c.post("/v1/search", json={"query": "ollama"})
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable" and "cannot open chunk store" in health.json()["reason"]
    assert search.status_code == 503 and search.headers["retry-after"] == "5"
    assert search.json()["error"]["type"] == "store" and "Traceback" not in search.text


def test_openapi_docs_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/health",
        "/v1/search",
        "/v1/ask",
        "/v1/documents",
        "/v1/documents/{doc_id}",
        "/v1/jobs/{job_id}",
    ):
        assert path in spec["paths"]
    assert "/v1/chat/completions" in spec["paths"] and "/v1/models" in spec["paths"]
    assert spec["components"]["schemas"]["SearchRequest"]["examples"][0]["query"]
    assert client.get("/docs").status_code == 200


# -- validation ------------------------------------------------------------------------------------


def error(res: Any, status: int) -> dict[str, Any]:
    assert res.status_code == status, res.text
    err: dict[str, Any] = res.json()["error"]
    assert set(err) >= {"type", "message", "hint"}
    return err


def test_422_bodies_name_the_field(client: TestClient) -> None:
    err = error(client.post("/v1/search", json={"k": 3}), 422)
    assert err["type"] == "validation_error" and err["details"][0]["loc"] == ["body", "query"]
    assert err["message"].startswith("query: ")
    err = error(client.post("/v1/search", json={"query": "x", "k": 101}), 422)  # max_k = 100
    assert err["details"] == [
        {"loc": ["body", "k"], "msg": "must be at most 100 (RAG_API__MAX_K)", "type": "less_than_equal"}
    ]
    err = error(client.post("/v1/search", json={"query": "x", "mode": "fuzzy"}), 422)
    assert err["details"][0]["loc"] == ["body", "mode"]
    err = error(client.post("/v1/search", json={"query": "x", "size": 3}), 422)
    assert err["details"][0]["type"] == "extra_forbidden"
    err = error(client.post("/v1/search", json={"query": "   "}), 422)
    assert err["details"][0]["msg"] == "must not be empty or blank"
    err = error(
        client.post("/v1/search", content=b"{not json", headers={"content-type": "application/json"}), 422
    )
    assert err["type"] == "validation_error"


def test_question_length_is_bounded(tmp_path: Path, stub: LLMStub) -> None:
    with TestClient(create_app(api_settings(tmp_path, stub.url, max_question_chars=20))) as c:
        err = error(c.post("/v1/ask", json={"question": "x" * 21}), 422)
        assert err["details"][0]["loc"] == ["body", "question"] and "at most 20" in err["details"][0]["msg"]
        assert c.post("/v1/ask", json={"question": "ollama port?", "no_llm": True}).status_code == 200
        chat = {"model": "rag", "messages": [{"role": "user", "content": "y" * 21}]}
        assert error(c.post("/v1/chat/completions", json=chat), 422)["details"][0]["loc"] == [
            "body",
            "messages",
        ]
    assert not stub.chats()


def test_chat_validation(client: TestClient) -> None:
    system_only = {"model": "rag", "messages": [{"role": "system", "content": "hi"}]}
    assert "no user message" in error(client.post("/v1/chat/completions", json=system_only), 422)["message"]
    two = {"model": "rag", "n": 2, "messages": [{"role": "user", "content": "hi"}]}
    assert error(client.post("/v1/chat/completions", json=two), 422)["details"][0]["loc"] == ["body", "n"]


# -- 404s and internal errors ------------------------------------------------------------------------


def test_404s(client: TestClient) -> None:
    assert error(client.delete("/v1/documents/0123456789abcdef"), 404)["type"] == "not_found"
    assert error(client.get("/v1/jobs/job-404"), 404)["type"] == "not_found"
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": QUESTION}]}
    assert "`gpt-4o` does not exist" in error(client.post("/v1/chat/completions", json=chat), 404)["message"]
    assert error(client.get("/v1/nothing-here"), 404)["type"] == "not_found"


def test_an_unexpected_error_is_a_500_without_a_trace(
    tmp_path: Path, stub: LLMStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals at /srv/x.py")

    with TestClient(create_app(api_settings(tmp_path, stub.url)), raise_server_exceptions=False) as c:
        monkeypatch.setattr(ServingEngine, "search", boom)
        res = c.post("/v1/search", json={"query": "ollama"})
        streamed = c.post("/v1/ask", json={"question": QUESTION, "stream": True})
    for r in (res, streamed):
        assert r.status_code == 500
        assert r.json() == {
            "error": {
                "type": "internal_error",
                "message": "internal server error",
                "hint": "see the server log",
            }
        }


# -- auth ------------------------------------------------------------------------------------------


def test_api_key_guards_every_endpoint_but_health(tmp_path: Path, stub: LLMStub) -> None:
    with TestClient(create_app(api_settings(tmp_path, stub.url, api_key="s3cret"))) as c:
        res = c.post("/v1/search", json={"query": "ollama"})
        err = error(res, 401)
        assert err["type"] == "unauthorized" and res.headers["www-authenticate"] == "Bearer"
        assert error(c.get("/v1/documents", headers={"Authorization": "Bearer nope"}), 401)["message"] == (
            "invalid bearer token"
        )
        assert error(c.get("/v1/models", headers={"Authorization": "Basic czNjcmV0"}), 401)
        assert error(upload(c, ("a.md", b"# a\n")), 401)
        ok = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/search", json={"query": "ollama"}, headers=ok).status_code == 200
        assert c.get("/v1/models", headers=ok).status_code == 200
        assert upload(c, ("a.md", b"# a\n"), headers=ok).status_code == 202
        assert c.get("/health").status_code == 200
        assert c.get("/openapi.json").status_code == 200


def test_read_and_write_keys(tmp_path: Path, stub: LLMStub) -> None:
    settings = api_settings(tmp_path, stub.url, read_key="reader", write_key="writer")
    with TestClient(create_app(settings)) as c:
        reader, writer = {"Authorization": "Bearer reader"}, {"Authorization": "Bearer writer"}
        assert c.get("/v1/documents", headers=reader).status_code == 200
        assert c.get("/v1/documents", headers=writer).status_code == 200  # a write key reads too
        err = error(upload(c, ("a.md", b"# a\n"), headers=reader), 403)
        assert err["type"] == "forbidden" and err["message"] == "this key may not write"
        assert error(c.delete("/v1/documents/0123456789abcdef", headers=reader), 403)
        assert c.delete("/v1/documents/0123456789abcdef", headers=writer).status_code == 404
        assert upload(c, ("a.md", b"# a\n"), headers=writer).status_code == 202


def test_only_a_read_key_closes_writes(tmp_path: Path, stub: LLMStub) -> None:
    with TestClient(create_app(api_settings(tmp_path, stub.url, read_key="reader"))) as c:
        assert c.get("/v1/documents", headers={"Authorization": "Bearer reader"}).status_code == 200
        assert error(upload(c, ("a.md", b"# a\n"), headers={"Authorization": "Bearer reader"}), 403)
        assert error(upload(c, ("a.md", b"# a\n")), 401)


# -- uploads ---------------------------------------------------------------------------------------


def test_upload_ingests_in_the_background(client: TestClient) -> None:
    zebra = "# 斑马\n\nzebra giraffe penguin 长颈鹿\n".encode()
    res = upload(client, ("zebra.md", zebra), ("b.txt", b"okapi notes\n"))
    assert res.status_code == 202
    body = res.json()
    assert body["files"] == [{"name": "zebra.md", "bytes": len(zebra)}, {"name": "b.txt", "bytes": 12}]
    assert res.headers["location"] == f"/v1/jobs/{body['job']['id']}"
    job = wait_job(client, body["job"]["id"])
    assert job["status"] == "done", job
    assert job["result"]["added"] == 2 and job["result"]["failed"] == []
    hits = client.post("/v1/search", json={"query": "zebra giraffe"}).json()["hits"]
    assert hits[0]["source"] == "zebra.md"
    docs = {d["source"]: d for d in client.get("/v1/documents").json()["documents"]}
    assert docs["zebra.md"]["uploaded"] is True and docs["ollama-en.md"]["uploaded"] is False
    assert {"doc_id", "path", "pages", "chunks", "ingested_at"} <= set(docs["zebra.md"])
    assert docs["zebra.md"]["chunks"] >= 1


@pytest.mark.parametrize(
    ("name", "saved"),
    [
        ("../../evil.md", "evil.md"),
        ("..\\..\\windows.md", "windows.md"),
        ("/etc/abs.md", "abs.md"),
        ("notes/../../../up.md", "up.md"),
        (".hidden.md", "hidden.md"),
        ("笔记 <1>.md", "笔记 _1_.md"),
    ],
)
def test_upload_names_cannot_escape_the_uploads_folder(client: TestClient, name: str, saved: str) -> None:
    res = upload(client, (name, b"# t\n\nwalrus\n"))
    assert res.status_code == 202, res.text
    assert res.json()["files"][0]["name"] == saved
    assert wait_job(client, res.json()["job"]["id"])["status"] == "done"
    uploads = engine_of(client).settings.data_dir / "uploads"
    assert [p.name for p in uploads.iterdir()] == [saved]
    assert list(uploads.parent.parent.rglob(saved)) == [uploads / saved]  # nowhere else under tmp_path


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("..", "input"),
        ("...", "input"),
        (".md", "input"),
        ("noext", "input"),
        ("run.exe", "unsupported_file"),
    ],
)
def test_unusable_upload_names_are_422(client: TestClient, name: str, kind: str) -> None:
    assert error(upload(client, (name, b"data")), 422)["type"] == kind
    assert not (engine_of(client).settings.data_dir / "uploads").exists()


def test_duplicate_names_in_one_request(client: TestClient) -> None:
    assert "both named 'a.md'" in error(upload(client, ("a.md", b"1"), ("x/a.md", b"2")), 422)["message"]


def _multipart(name: str, size: int) -> tuple[bytes, str]:
    boundary = "testboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: text/markdown\r\n\r\n"
    ).encode()
    return (
        head + b"x" * size + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def test_413_over_the_upload_limit(tmp_path: Path, stub: LLMStub) -> None:
    limit = 100 * 1024
    with TestClient(create_app(api_settings(tmp_path, stub.url, max_upload_mb=limit / 2**20))) as c:
        uploads = engine_of(c).settings.data_dir / "uploads"
        # declared: refused from Content-Length before the body is read
        err = error(upload(c, ("big.md", b"x" * (limit + 70 * 1024))), 413)
        assert err["type"] == "too_large" and "0.0976562 MiB" in err["message"]
        # chunked (no Content-Length): refused while reading
        body, ctype = _multipart("big.md", limit + 70 * 1024)
        chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
        res = c.post("/v1/documents", content=chunks, headers={"content-type": ctype})
        assert error(res, 413)["type"] == "too_large"
        # under the transport limit, over the file budget: two files that add up to more than the limit
        err = error(upload(c, ("a.md", b"a" * (limit // 2 + 10)), ("b.md", b"b" * (limit // 2 + 10))), 413)
        assert err["type"] == "file_too_large"
        assert not uploads.exists() or not list(uploads.iterdir())  # nothing half-saved
        assert upload(c, ("ok.md", b"o" * (limit - 10))).status_code == 202


# -- delete ----------------------------------------------------------------------------------------


def test_delete_removes_the_document_from_every_index(tmp_path: Path, stub: LLMStub) -> None:
    settings = api_settings(tmp_path, stub.url)
    settings.embedding.model = "api-hashing"  # enables the dense leg; the embedder is injected
    with TestClient(create_app(settings, embedder=HashingEmbedder())) as c:
        job = wait_job(
            c, upload(c, ("walrus.md", b"# Walrus\n\nwalrus tusks ivory arctic\n")).json()["job"]["id"]
        )
        assert job["status"] == "done"
        engine = engine_of(c)
        doc = next(d for d in c.get("/v1/documents").json()["documents"] if d["source"] == "walrus.md")
        chunk_ids = {ch.chunk_id for ch in engine.store.chunks_of(doc["doc_id"])}
        sparse, dense = engine.leg("sparse"), engine.leg("dense")
        assert isinstance(sparse, SparseLeg) and isinstance(dense, DenseLeg)
        assert chunk_ids <= set(sparse.index.ids()) and chunk_ids <= dense.vectors.ids()
        for mode in ("sparse", "dense", "hybrid"):
            hits = c.post("/v1/search", json={"query": "walrus tusks", "mode": mode}).json()["hits"]
            assert doc["doc_id"] in {h["doc_id"] for h in hits}, mode

        res = c.delete(f"/v1/documents/{doc['doc_id']}")
        assert res.status_code == 200
        body = res.json()
        assert body["deleted"] is True and body["source"] == "walrus.md" and body["removed_file"] is True
        engine = engine_of(c)
        assert engine.store.document(doc["doc_id"]) is None
        assert not chunk_ids & set(engine.leg("sparse").index.ids())  # type: ignore[attr-defined]
        assert not chunk_ids & engine.leg("dense").vectors.ids()  # type: ignore[attr-defined]
        for mode in ("sparse", "dense", "hybrid"):
            hits = c.post("/v1/search", json={"query": "walrus tusks", "mode": mode}).json()["hits"]
            assert doc["doc_id"] not in {h["doc_id"] for h in hits}, mode
        assert doc["doc_id"] not in {d["doc_id"] for d in c.get("/v1/documents").json()["documents"]}
        assert not (settings.data_dir / "uploads" / "walrus.md").exists()
        assert error(c.delete(f"/v1/documents/{doc['doc_id']}"), 404)
        health = c.get("/health").json()
        assert health["vector_store"]["status"] == "ok"
        assert health["vector_store"]["points"] == health["index"]["chunks"]


def test_delete_while_the_same_file_is_being_ingested_is_409(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingest.pipeline

    first = wait_job(client, upload(client, ("seal.md", b"# Seal\n\nseal v1\n")).json()["job"]["id"])
    doc_id = next(
        d["doc_id"] for d in client.get("/v1/documents").json()["documents"] if d["source"] == "seal.md"
    )
    assert first["status"] == "done"

    gate = threading.Event()
    real = ingest.pipeline.sync_paths

    def gated(*args: Any, **kwargs: Any) -> Any:
        gate.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest.pipeline, "sync_paths", gated)
    job_id = upload(client, ("seal.md", b"# Seal\n\nseal v2\n")).json()["job"]["id"]
    err = error(client.delete(f"/v1/documents/{doc_id}"), 409)
    assert err["type"] == "conflict" and job_id in err["message"] and f"/v1/jobs/{job_id}" in err["hint"]
    gate.set()
    assert wait_job(client, job_id)["status"] == "done"
    assert client.delete(f"/v1/documents/{doc_id}").status_code == 200


def test_a_failed_write_is_reported_in_the_job(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import ingest.pipeline

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("disk is full", hint="free some space")

    monkeypatch.setattr(ingest.pipeline, "sync_paths", broken)
    job = wait_job(client, upload(client, ("x.md", b"# x\n")).json()["job"]["id"])
    assert job["status"] == "failed"
    assert job["error"] == {"type": "store", "message": "disk is full", "hint": "free some space"}


# -- graph -----------------------------------------------------------------------------------------


@pytest.mark.slow  # loads the entity lexicon (~4 s)
def test_graph_entity(tmp_path: Path, stub: LLMStub) -> None:
    with TestClient(create_app(api_settings(tmp_path, stub.url, graph=True))) as c:
        res = c.get("/v1/graph/entities/ollama")
        assert res.status_code == 200, res.text
        card = res.json()
        assert card["key"] == "ollama" and card["n_mentions"] >= 2
        assert {"docker/gpu.md", "ollama-en.md"} <= set(card["documents"])
        assert error(c.get("/v1/graph/entities/no-such-thing-here"), 404)["type"] == "not_found"
        job = wait_job(
            c,
            upload(c, ("kafka.md", b"# Kafka\n\nApache Kafka stores events in topics.\n")).json()["job"][
                "id"
            ],
        )
        assert job["status"] == "done"
        assert c.get("/v1/graph/entities/kafka").json()["documents"] == ["kafka.md"]
        doc_id = next(
            d["doc_id"] for d in c.get("/v1/documents").json()["documents"] if d["source"] == "kafka.md"
        )
        assert c.delete(f"/v1/documents/{doc_id}").status_code == 200
        gone = c.get("/v1/graph/entities/kafka")  # the graph forgot the only chunk mentioning it
        assert gone.status_code == 404 or gone.json()["documents"] == []
        assert not engine_of(c).leg("graph").graph.chunk_ids() - engine_of(c).store.chunk_ids()  # type: ignore[attr-defined]


def test_graph_disabled_is_404(client: TestClient) -> None:
    err = error(client.get("/v1/graph/entities/ollama"), 404)
    assert err["message"] == "the entity graph is disabled" and "RAG_GRAPH__ENABLED" in err["hint"]
