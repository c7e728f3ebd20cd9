"""The LLM seam: a chat model that streams text, says who it is and how much context it takes.

Adapters (:mod:`rag.llm.ollama`, :mod:`rag.llm.openai_compat`) raise only the
``LLMError`` family from :mod:`rag.errors`; nothing here touches the network
until a method is called.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    from rag.settings import LLMSettings

Role = Literal["system", "user", "assistant"]


class ChatMessage(TypedDict):
    role: Role
    content: str


class LLMInfo(TypedDict):
    """Which backend and model produced an answer (the ``llm`` object of the ``rag ask`` contract)."""

    backend: str
    model: str


@runtime_checkable
class LLM(Protocol):
    """A streaming chat model.

    ``stream_chat`` yields the answer's text pieces as the server produces them.
    It may retry connection failures, but only before the first piece; a failure
    after that raises ``LLMStreamError`` or ``LLMTimeoutError`` so a caller never
    sees a piece twice. ``context_length`` is the window (in the model's tokens)
    that every request asks for; adapters look it up once per model and cache it.
    """

    def info(self) -> LLMInfo: ...

    def context_length(self) -> int: ...

    def stream_chat(self, messages: Sequence[ChatMessage]) -> Iterator[str]: ...

    def close(self) -> None: ...


# Context lengths by (backend, base URL, model): a model's window does not change while
# a process runs, and looking it up costs a request (Ollama's /api/show reads the model file).
_CONTEXT_CACHE: dict[tuple[str, str, str], int] = {}
_CONTEXT_LOCK = threading.Lock()


def cached_context_length(key: tuple[str, str, str]) -> int | None:
    with _CONTEXT_LOCK:
        return _CONTEXT_CACHE.get(key)


def remember_context_length(key: tuple[str, str, str], value: int) -> None:
    with _CONTEXT_LOCK:
        _CONTEXT_CACHE[key] = value


def clear_context_cache() -> None:
    with _CONTEXT_LOCK:
        _CONTEXT_CACHE.clear()


class ModelIdentity:
    """What every adapter answers the same way: ``info()`` and ``context_length()`` (the configured
    ``num_ctx``, else the model's own window, looked up once per (backend, URL, model) in a
    process). An adapter sets ``backend``, ``url``, ``model`` and ``settings`` and supplies
    ``_lookup_context_length``."""

    backend: str
    url: str
    model: str
    settings: LLMSettings

    def _lookup_context_length(self) -> int:
        raise NotImplementedError

    def info(self) -> LLMInfo:
        return {"backend": self.backend, "model": self.model}

    def context_length(self) -> int:
        if self.settings.num_ctx is not None:
            return int(self.settings.num_ctx)
        key = (self.backend, self.url, self.model)
        cached = cached_context_length(key)
        if cached is not None:
            return cached
        value = self._lookup_context_length()
        remember_context_length(key, value)
        return value
