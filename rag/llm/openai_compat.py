"""Adapter for OpenAI-compatible chat servers (vLLM, llama.cpp ``llama-server``, LM Studio...).

``POST {url}/chat/completions`` with ``"stream": true`` answers with server-sent
events: ``data: {json chunk}`` lines, ``choices[0].delta.content`` holding the
text, and ``data: [DONE]`` at the end. The server fixes the context window, so
nothing like Ollama's ``num_ctx`` is sent; the window used for the prompt
budget is the configured ``num_ctx``, else what ``GET {url}/models`` reports
for the model (vLLM ``max_model_len``, llama.cpp ``meta.n_ctx_train``, others
``context_length``) capped at ``num_ctx_max``, else 4096.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from rag.errors import LLMError, LLMStreamError, LLMUnavailableError, ModelNotFoundError
from rag.llm._http import DONE, HTTPChatLLM, error_text
from rag.llm.base import ChatMessage
from rag.settings import LLMSettings

DEFAULT_CONTEXT = 4096


def model_context_length(entry: dict[str, Any]) -> int | None:
    """The context window in one ``/models`` entry, by the field names servers use."""
    for value in (
        entry.get("max_model_len"),
        entry.get("context_length"),
        entry.get("max_context_length"),
        (entry.get("meta") or {}).get("n_ctx_train") if isinstance(entry.get("meta"), dict) else None,
    ):
        if isinstance(value, int | float) and value > 0:
            return int(value)
    return None


class OpenAICompatLLM(HTTPChatLLM):
    """Chat with one model on an OpenAI-compatible server; ``url`` ends in ``/v1``."""

    backend = "openai"
    what = "the OpenAI-compatible server"

    def __init__(self, settings: LLMSettings, *, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        super().__init__(settings, "OpenAI-compatible server", transport=transport, headers=headers)

    def _unavailable(self, exc: Exception) -> LLMUnavailableError:
        return LLMUnavailableError(
            f"cannot reach the OpenAI-compatible server at {self.url}",
            hint="start it or check RAG_LLM__URL",
        )

    def _map_status(self, code: int, body: str) -> LLMError:
        msg = error_text(body)
        if code == 404:
            return ModelNotFoundError(
                f"the server at {self.url} does not serve model {self.model}: {msg}",
                hint="check RAG_LLM__MODEL against GET " + self.url + "/models",
            )
        if code in (401, 403):
            return LLMError(
                f"the server at {self.url} refused the request: {msg}", hint="check RAG_LLM__API_KEY"
            )
        return LLMStreamError(f"the server at {self.url} replied HTTP {code}: {msg}")

    def _lookup_context_length(self) -> int:
        try:
            reply = self._json("GET", "/models", map_status=lambda code, body: LLMStreamError(f"HTTP {code}"))
        except LLMStreamError:  # no usable /models: fall back to a conservative window
            reply = {}
        entries = reply.get("data", []) if isinstance(reply, dict) else []
        entry = next((e for e in entries if isinstance(e, dict) and e.get("id") == self.model), None)
        if entries and entry is None:
            served = ", ".join(str(e.get("id")) for e in entries[:8] if isinstance(e, dict))
            raise ModelNotFoundError(
                f"the server at {self.url} does not serve model {self.model}",
                hint=f"served: {served}; set RAG_LLM__MODEL",
            )
        trained = model_context_length(entry) if entry else None
        cap = self.settings.num_ctx_max
        return min(trained, cap) if trained else min(DEFAULT_CONTEXT, cap)

    def stream_chat(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        self.context_length()  # fails early (model not served) before a long request
        body = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "stream": True,
            "max_tokens": self.settings.max_tokens,
            "temperature": self.settings.temperature,
        }
        return self._stream("/chat/completions", body, headers={"Accept": "text/event-stream"})

    def _parse_line(self, line: str) -> str | None:
        # SSE: "data: ..." carries a chunk; blank lines end events; ":" starts a comment;
        # "event:", "id:" and "retry:" fields carry nothing we use.
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":
            return DONE
        try:
            obj = json.loads(data)
        except ValueError:
            raise LLMStreamError(f"the server sent an event that is not JSON: {data[:80]!r}") from None
        if not isinstance(obj, dict):
            raise LLMStreamError(f"the server sent an unexpected event: {data[:80]!r}")
        if "error" in obj or obj.get("object") == "error":
            raise LLMStreamError(f"the server reported an error: {error_text(data)}")
        if isinstance(obj.get("usage"), dict):
            self.last_stats["usage"] = obj["usage"]
        choices = obj.get("choices") or []
        if not choices:
            return None  # e.g. a usage-only chunk
        choice = choices[0] if isinstance(choices[0], dict) else {}
        if choice.get("finish_reason"):
            self.last_stats["finish_reason"] = choice["finish_reason"]
        delta = choice.get("delta") or {}
        return str(delta.get("content") or "")
