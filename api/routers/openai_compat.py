"""OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models``, so chat clients can use
the notes as a model named ``rag``.

The last user message is the question and the messages before it are the
conversation: a follow-up ("它默认监听哪个端口？") is rewritten into a standalone
question before retrieval (:mod:`rag.conversation`), and each answer is grounded
in passages freshly retrieved for it. When the question was rewritten, the reply
starts with the rewritten question on its own line (``→ …``), so a chat client
shows what was searched for. The reply is the cited answer of
``/v1/ask`` with its sources appended to the text, since chat clients show only
the text: ``[1] docker/gpu.md p.2: “quote”``. Streaming sends the answer's
tokens as ``chat.completion.chunk`` deltas, then the sources, then
``finish_reason: "stop"`` and ``data: [DONE]``. ``usage`` is not reported (the
model's own counts are not tracked per request).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Generator, Sequence
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.responses import Response

from api.auth import require_read
from api.limits import check_text
from api.schemas import ChatCompletionRequest, ChatMessage, ModelList
from api.service import EngineDep, ServiceDep
from api.serving import ServingEngine
from api.sse import EventStream, closing_iterator, sse_event
from rag.answer import Answer, FinalEvent, TokenEvent
from rag.conversation import Rewrite, RewriteEvent, conversation_stream, converse
from rag.errors import InputError, NotFoundError
from rag.llm import LLM
from rag.llm import ChatMessage as Turn

router = APIRouter(tags=["openai"], dependencies=[Depends(require_read)])

MODEL_ID = "rag"
SOURCES_LABEL = {"zh": "来源：", "en": "Sources:"}

CHAT_EXAMPLE: dict[str, Any] = {
    "id": "chatcmpl-3f9a2c1e",
    "object": "chat.completion",
    "created": 1767225600,
    "model": MODEL_ID,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Ollama listens on port 11434 [1].\n\nSources:\n[1] ollama-en.md: “Ollama listens on port "
                "11434 by default.”",
            },
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": None,
}


def message_text(message: ChatMessage) -> str:
    """The text of a message: a string, or the ``text`` parts of a list of content parts."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(
        str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
    )


def question_of(messages: Sequence[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message_text(message)
    raise InputError("the messages contain no user message", hint='add {"role": "user", "content": "..."}')


def history_of(messages: Sequence[ChatMessage]) -> list[Turn]:
    """The user and assistant turns before the last user message (the conversation it follows)."""
    last = max(i for i, m in enumerate(messages) if m.role == "user")
    turns: list[Turn] = []
    for m in messages[:last]:
        if m.role == "user":
            turns.append({"role": "user", "content": message_text(m)})
        elif m.role == "assistant":
            turns.append({"role": "assistant", "content": message_text(m)})
    return turns


def rewrite_text(rewrite: Rewrite | None) -> str:
    """The line shown before the answer when the question was rewritten ("" otherwise)."""
    return f"→ {rewrite.standalone}\n\n" if rewrite is not None and rewrite.changed else ""


def sources_text(final: Answer) -> str:
    """The citations as text to append to the answer ("" when nothing is cited)."""
    if not final.citations:
        return ""
    lines = ["", "", SOURCES_LABEL.get(final.language, "Sources:")]
    for c in final.citations:
        where = c.source + (f" p.{c.page}" if c.page is not None else "")
        lines.append(f"[{c.n}] {where}: “{c.quote}”")
    return "\n".join(lines)


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def chat_chunks(
    engine: ServingEngine,
    llm: LLM | None,
    question: str,
    history: list[Turn],
    completion_id: str,
    created: int,
) -> Generator[bytes, None, None]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL_ID,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return sse_event(json.dumps(body, ensure_ascii=False))

    started = False
    with closing_iterator(conversation_stream(engine, llm, question, history)) as events:
        for event in events:
            if isinstance(event, RewriteEvent) and event.rewrite.changed:
                started = True
                yield chunk({"role": "assistant", "content": rewrite_text(event.rewrite)})
            elif isinstance(event, TokenEvent) and event.text:
                delta: dict[str, Any] = {"content": event.text}
                if not started:
                    delta["role"] = "assistant"
                    started = True
                yield chunk(delta)
            elif isinstance(event, FinalEvent):
                tail = sources_text(event.answer)
                if not started:
                    yield chunk({"role": "assistant", "content": ""})
                if tail:
                    yield chunk({"content": tail})
                yield chunk({}, "stop")
    yield b"data: [DONE]\n\n"


def sse_error(body: dict[str, Any]) -> bytes:
    return sse_event(json.dumps(body, ensure_ascii=False)) + b"data: [DONE]\n\n"


@router.get("/v1/models", summary="The models served (OpenAI-compatible)", response_model=ModelList)
def list_models(service: ServiceDep) -> Response:
    card = {"id": MODEL_ID, "object": "model", "created": int(service.started_at), "owned_by": "rag-notes"}
    return JSONResponse({"object": "list", "data": [card]})


@router.post(
    "/v1/chat/completions",
    summary="Chat completion answered from the documents (OpenAI-compatible)",
    response_model=None,
    responses={
        200: {
            "description": "A chat.completion, or with `stream: true` chat.completion.chunk events.",
            "content": {"application/json": {"example": CHAT_EXAMPLE}},
        }
    },
)
def chat_completions(body: ChatCompletionRequest, engine: EngineDep, service: ServiceDep) -> Response:
    if body.model != MODEL_ID:
        raise NotFoundError(
            f"the model `{body.model}` does not exist", hint=f"use model {MODEL_ID!r} (GET /v1/models)"
        )
    question = check_text(
        ("body", "messages"), question_of(body.messages), service.settings.api.max_question_chars
    )
    history = history_of(body.messages)
    completion_id, created = _completion_id(), int(time.time())
    if body.stream:
        return EventStream(
            chat_chunks(engine, service.llm, question, history, completion_id, created), sse_error
        )
    final, rewrite = converse(engine, service.llm, question, history)
    message = {"role": "assistant", "content": rewrite_text(rewrite) + final.text + sources_text(final)}
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": MODEL_ID,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "usage": None,
            "citations": [c.as_dict() for c in final.citations],
            "rewrite": rewrite.as_dict(),
        }
    )
