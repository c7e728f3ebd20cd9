"""Language models behind one small seam (:class:`LLM`), built from settings by :func:`make_llm`.

=============  ================================================================
``ollama``     an Ollama server (default ``http://127.0.0.1:11434``), through the
               official ``ollama`` client
``openai``     any OpenAI-compatible server (vLLM, llama.cpp, LM Studio), ``url``
               ending in ``/v1``
``none``       no model: :func:`make_llm` returns ``None`` and answers are
               extractive
=============  ================================================================

Constructing an adapter sends nothing; the first request goes out when an
answer needs it.
"""

from __future__ import annotations

from rag.errors import ConfigError
from rag.llm.base import LLM, ChatMessage, LLMInfo, clear_context_cache
from rag.settings import LLMSettings

__all__ = ["LLM", "ChatMessage", "LLMInfo", "clear_context_cache", "make_llm"]


def make_llm(settings: LLMSettings) -> LLM | None:
    """The adapter that ``settings.backend`` names, or ``None`` for ``"none"``."""
    if settings.backend == "ollama":
        from rag.llm.ollama import OllamaLLM

        return OllamaLLM(settings)
    if settings.backend == "openai":
        from rag.llm.openai_compat import OpenAICompatLLM

        return OpenAICompatLLM(settings)
    if settings.backend == "none":
        return None
    raise ConfigError(f"unknown LLM backend {settings.backend!r}", hint="one of: ollama, openai, none")
