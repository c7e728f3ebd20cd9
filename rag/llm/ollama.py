"""Ollama adapter over its native HTTP API (``/api/chat`` NDJSON streaming, ``/api/show``,
``/api/tags``, ``/api/version``).

Plain httpx rather than the ``ollama`` client package: httpx is already a
dependency, and the adapter needs control the client does not give: a
first-token timeout separate from the between-token timeout (a cold model
load is slow, a stall is not), retries strictly before the first token, and
``num_ctx`` on every request.

Context window. Ollama's default ``num_ctx`` is small (2048 or 4096 tokens
depending on the version) and longer prompts are silently cut from the front,
so every request sends ``options.num_ctx``: the configured value, else the
model's own, read once per model from ``/api/show``: a ``num_ctx`` set in
its Modelfile (the model author's or user's choice), else the trained length
``model_info["<arch>.context_length"]`` capped at ``num_ctx_max``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from rag.errors import LLMError, LLMStreamError, LLMUnavailableError, ModelNotFoundError
from rag.llm._http import DONE, Done, HTTPChatLLM, error_text
from rag.llm.base import ChatMessage
from rag.settings import LLMSettings

DEFAULT_CONTEXT = 4096  # when /api/show names no context length at all


def parse_show_context(show: dict[str, Any]) -> tuple[int | None, int | None]:
    """``(modelfile_num_ctx, trained_context_length)`` from an ``/api/show`` reply (None when absent)."""
    explicit: int | None = None
    params = show.get("parameters")
    if isinstance(params, str):
        m = re.search(r"^\s*num_ctx\s+(\d+)\s*$", params, flags=re.MULTILINE)
        if m:
            explicit = int(m.group(1))
    trained: int | None = None
    info = show.get("model_info")
    if isinstance(info, dict):
        arch = info.get("general.architecture")
        value = info.get(f"{arch}.context_length") if arch else None
        if value is None:
            value = next((v for k, v in info.items() if k.endswith(".context_length")), None)
        if isinstance(value, int | float) and value > 0:
            trained = int(value)
    return explicit, trained


def choose_num_ctx(explicit: int | None, trained: int | None, cap: int) -> int:
    """The window to request: the Modelfile's ``num_ctx`` (never above the trained length),
    else the trained length capped at ``cap``, else :data:`DEFAULT_CONTEXT`."""
    if explicit is not None:
        return min(explicit, trained) if trained else explicit
    if trained is not None:
        return min(trained, cap)
    return min(DEFAULT_CONTEXT, cap)


def _is_json_error(body: str) -> bool:
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    return isinstance(obj, dict) and "error" in obj


class OllamaLLM(HTTPChatLLM):
    """Chat with one model on an Ollama server. One instance may serve several threads;
    ``last_stats`` (Ollama's counts from the final line) then belongs to whichever stream ended last."""

    backend = "ollama"
    what = "Ollama"

    def __init__(self, settings: LLMSettings, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(settings, "Ollama", transport=transport)

    # -- errors ------------------------------------------------------------------------------------

    def _unavailable(self, exc: Exception) -> LLMUnavailableError:
        return LLMUnavailableError(
            f"cannot reach Ollama at {self.url}",
            hint="start it with `ollama serve` or check RAG_LLM__URL",
        )

    def _map_status(self, code: int, body: str) -> LLMError:
        msg = error_text(body)
        if code == 404 and not _is_json_error(body):
            return LLMStreamError(
                f"HTTP 404 from {self.url}: {msg}", hint="is this an Ollama server? check RAG_LLM__URL"
            )
        if code == 404:
            return ModelNotFoundError(
                f"model {self.model} is not pulled on the Ollama server at {self.url}",
                hint=f"run `ollama pull {self.model}`",
            )
        return LLMStreamError(f"Ollama replied HTTP {code}: {msg}")

    # -- the LLM protocol --------------------------------------------------------------------------

    def _lookup_context_length(self) -> int:
        try:
            show = self._json("POST", "/api/show", {"model": self.model})
        except ModelNotFoundError as exc:
            with contextlib.suppress(LLMError):
                pulled = self.list_models()
                exc.hint = f"{exc.hint}; pulled: {', '.join(pulled[:8]) or 'none'}"
            raise
        if not isinstance(show, dict):
            raise LLMStreamError("Ollama's /api/show reply is not a JSON object")
        return choose_num_ctx(*parse_show_context(show), self.settings.num_ctx_max)

    def stream_chat(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        num_ctx = self.context_length()
        body = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "stream": True,
            "options": {
                "num_ctx": num_ctx,
                "num_predict": self.settings.max_tokens,
                "temperature": self.settings.temperature,
            },
        }
        return self._stream("/api/chat", body)

    def _parse_line(self, line: str) -> str | None:
        if not line.strip():
            return None
        try:
            obj = json.loads(line)
        except ValueError:
            raise LLMStreamError(f"Ollama sent a line that is not JSON: {line[:80]!r}") from None
        if not isinstance(obj, dict):
            raise LLMStreamError(f"Ollama sent an unexpected line: {line[:80]!r}")
        if "error" in obj:
            raise LLMStreamError(f"Ollama reported an error: {error_text(line)}")
        if obj.get("done"):
            self.last_stats = {
                k: obj[k]
                for k in (
                    "done_reason",
                    "total_duration",
                    "load_duration",
                    "prompt_eval_count",
                    "prompt_eval_duration",
                    "eval_count",
                    "eval_duration",
                )
                if k in obj
            }
            tail = (obj.get("message") or {}).get("content") or ""
            return Done(tail) if tail else DONE
        message = obj.get("message") or {}
        # A thinking model streams its reasoning under "thinking": it shows the model is
        # generating (so it ends the first-token wait) but is not part of the answer.
        return str(message.get("content") or "")

    # -- extras ------------------------------------------------------------------------------------

    def version(self) -> str:
        """The server's version (``GET /api/version``); also a cheap reachability check."""
        reply = self._json("GET", "/api/version")
        return str(reply.get("version", "")) if isinstance(reply, dict) else ""

    def list_models(self) -> list[str]:
        """Names of the models pulled on the server (``GET /api/tags``)."""
        reply = self._json("GET", "/api/tags")
        models = reply.get("models", []) if isinstance(reply, dict) else []
        return [str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict)]
