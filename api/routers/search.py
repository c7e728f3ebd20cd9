"""``POST /v1/search`` and ``POST /v1/ask``: the bodies of `rag search --json` and `rag ask --json`."""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.responses import Response

from api.auth import require_read
from api.limits import check_k, check_text
from api.schemas import AskRequest, AskResponse, SearchRequest, SearchResponse
from api.service import EngineDep, ServiceDep
from api.sse import EventStream, closing_iterator, sse_event
from rag.answer import answer, answer_stream
from rag.conversation import answer_dict, conversation_stream, converse
from rag.llm import LLM, ChatMessage
from rag.serving import ServingEngine

router = APIRouter(tags=["search"], dependencies=[Depends(require_read)])

ASK_STREAM_EXAMPLE = (
    'event: token\ndata: {"text": "Ollama listens on port 11434"}\n\n'
    'event: token\ndata: {"text": " [1]."}\n\n'
    'event: citations\ndata: {"citations": [{"n": 1, "source": "ollama-en.md", "...": "..."}], '
    '"invalid_citations": []}\n\n'
    'event: final\ndata: {"answer": "Ollama listens on port 11434 [1].", "citations": [...], "...": "..."}\n\n'
)


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def search_body(query: str, mode: str, took_ms: float, hits: list[dict[str, Any]]) -> dict[str, Any]:
    """The `rag search --json` object (without ``dense_coverage``: see :func:`with_coverage`)."""
    return {"query": query, "mode": mode, "took_ms": round(took_ms, 2), "hits": hits}


def with_coverage(body: dict[str, Any], engine: ServingEngine) -> dict[str, Any]:
    """``body`` with ``dense_coverage`` (the share of the chunks the dense leg has embedded) when a
    dense model is configured, as `rag search --json` and `rag ask --json` print it."""
    with engine.reading():
        coverage = engine.dense_coverage()
    if coverage is not None:
        body["dense_coverage"] = coverage
    return body


@router.post(
    "/v1/search",
    summary="Search the documents",
    response_model=None,
    responses={
        200: {"model": SearchResponse, "description": "The hits, best first (as `rag search --json`)."}
    },
)
def search(body: SearchRequest, engine: EngineDep, service: ServiceDep) -> Response:
    api = service.settings.api
    check_text(("body", "query"), body.query, api.max_question_chars)
    check_k(("body", "k"), body.k, api.max_k)
    t0 = time.perf_counter()
    hits = engine.search(body.query, body.k, body.mode)
    took = (time.perf_counter() - t0) * 1000
    out = search_body(body.query, body.mode, took, [h.as_dict() for h in hits])
    return JSONResponse(with_coverage(out, engine))


def ask_events(
    engine: ServingEngine,
    llm: LLM | None,
    question: str,
    k: int | None,
    history: list[ChatMessage] | None = None,
) -> Generator[bytes, None, None]:
    """The answer's events as SSE: ``token``, ``citations``, ``final`` (after ``rewrite`` when the
    question follows up on a ``history``). ``final`` is the body of a plain `POST /v1/ask`, with
    ``dense_coverage`` too (see :func:`with_coverage`)."""
    stream = (
        conversation_stream(engine, llm, question, history, k=k)
        if history
        else answer_stream(engine, llm, question, k=k)
    )
    with closing_iterator(stream) as events:
        for event in events:
            body = event.as_dict()
            if event.type == "final":
                body = with_coverage(body, engine)
            yield sse_event(_json(body), event.type)


def sse_error(body: dict[str, Any]) -> bytes:
    return sse_event(_json(body), "error")


@router.post(
    "/v1/ask",
    summary="Answer a question from the documents, with citations",
    response_model=None,
    responses={
        200: {
            "model": AskResponse,
            "description": "The answer (as `rag ask --json`), or with `stream: true` server-sent events.",
            "content": {"text/event-stream": {"example": ASK_STREAM_EXAMPLE}},
        }
    },
)
def ask(body: AskRequest, engine: EngineDep, service: ServiceDep) -> Response:
    """Retrieves chunks, asks the configured model to answer from them only, and checks its
    citations. When the evidence is too weak it says the documents do not say; when the model
    cannot be reached it answers extractively and says so in `note`. With `history`, the question
    is first rewritten into a standalone one (shown in `rewrite`)."""
    api = service.settings.api
    question = check_text(("body", "question"), body.question, api.max_question_chars)
    k = check_k(("body", "k"), body.k, api.max_k)
    llm = None if body.no_llm else service.llm
    history: list[ChatMessage] = [{"role": m.role, "content": m.content} for m in body.history]
    if body.stream:
        return EventStream(ask_events(engine, llm, question, k, history), sse_error)
    if history:
        final, rewrite = converse(engine, llm, question, history, k=k)
        return JSONResponse(with_coverage(answer_dict(final, rewrite), engine))
    return JSONResponse(with_coverage(answer(engine, llm, question, k=k).as_dict(), engine))
