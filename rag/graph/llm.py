"""Entity extraction by a language model (``settings.graph.extractor == "llm"``), on top of the rules.

The model is the configured one, reached through the LLM seam
(:func:`rag.llm.make_llm`). For Ollama the request carries ``format``, a JSON
schema, so the server constrains decoding to ``{"entities": [{"name", "type"}]}``
(Ollama's structured outputs); other servers get the same instruction in the
prompt and the reply is parsed leniently (code fences and text around the
JSON are ignored). Each chunk has its own deadline (``llm_timeout_s``).

Names the model returns are kept only when their key occurs in the chunk's
own normalised text, so an invented entity never enters the graph; they join
the rule-based mentions with kind ``llm``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rag.errors import ConfigError, LLMError, LLMStreamError, LLMTimeoutError
from rag.graph.extract import Mention, is_junk
from rag.graph.normalize import AliasTable, normalize, normalize_key

if TYPE_CHECKING:
    from rag.llm import LLM
    from rag.settings import LLMSettings

__all__ = [
    "ENTITY_SCHEMA",
    "PROMPT_VERSION",
    "LLMExtractor",
    "build_messages",
    "merge_llm_entities",
    "parse_entities",
]

PROMPT_VERSION = "1"
MAX_CHARS = 4000  # of chunk text sent to the model
MAX_NAME_CHARS = 64

ENTITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entities": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
                "required": ["name"],
            },
        }
    },
    "required": ["entities"],
}

_SYSTEM = (
    "You extract entities from personal technical notes (Chinese and English). "
    'Reply with JSON only, in the form {"entities": [{"name": "...", "type": "..."}]}.'
)
_USER = (
    "List the specific things this passage is about: software, packages, models, commands, "
    "code identifiers, hosts, ports, products, organisations, people, places and technical concepts. "
    "Copy each name exactly as the passage writes it. No generic words, no sentences.\n\n"
    "<passage>\n{text}\n</passage>"
)


def build_messages(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": _SYSTEM},
        {"role": "user", "content": _USER.format(text=text[:MAX_CHARS])},
    ]


_FENCE_RE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$", re.M)


def parse_entities(reply: str) -> list[str]:
    """Entity names from a model's reply: ``{"entities": [...]}`` or a bare list, items given as
    strings or ``{"name": ...}`` objects. Raises :class:`ValueError` when there is no such JSON."""
    text = _FENCE_RE.sub("", reply.strip())
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        raise ValueError("no JSON in the reply")
    start = min(starts)
    end = max(text.rfind("}"), text.rfind("]"))
    obj = json.loads(text[start : end + 1])
    items = obj.get("entities") if isinstance(obj, dict) else obj
    if not isinstance(items, list):
        raise ValueError("the reply has no entity list")
    names: list[str] = []
    for item in items:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str) and name.strip():
            names.append(" ".join(name.split()))
    return names


def merge_llm_entities(
    rules: Sequence[Mention], names: Sequence[str], text: str, aliases: AliasTable
) -> list[Mention]:
    """The rule mentions plus the model's names that the rules missed and that occur in ``text``
    (compared by key, so spelling variants count), most salient first."""
    haystack = normalize(text)
    have = {m.key for m in rules}
    extra: dict[str, str] = {}
    for name in names:
        if len(name) > MAX_NAME_CHARS:
            continue
        raw = normalize_key(name)
        key = aliases.resolve(raw)
        if not raw or key in have or key in extra or is_junk(key, "llm") or raw not in haystack:
            continue
        extra[key] = aliases.canonical.get(key, name)
    out = list(rules) + [Mention(k, s, "llm", 1, 2.0) for k, s in extra.items()]
    out.sort(key=lambda m: (-m.salience, m.key))
    return out


class LLMExtractor:
    """Asks the configured model for a chunk's entities, within ``timeout_s`` per chunk."""

    def __init__(self, settings: LLMSettings, *, timeout_s: float, llm: LLM | None = None) -> None:
        if settings.backend == "none" and llm is None:
            raise ConfigError(
                "graph extractor 'llm' needs a language model, but the LLM backend is 'none'",
                hint="set RAG_LLM__BACKEND (ollama or openai) or RAG_GRAPH__EXTRACTOR=rules",
            )
        self.settings = settings.model_copy(
            update={
                "first_token_timeout_s": min(settings.first_token_timeout_s, timeout_s),
                "read_timeout_s": min(settings.read_timeout_s, timeout_s),
                "temperature": 0.0,
                "max_tokens": min(settings.max_tokens, 512),
            }
        )
        self.timeout_s = timeout_s
        self._llm = llm

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            if self.settings.backend == "ollama":
                from rag.llm.ollama import OllamaLLM

                self._llm = OllamaLLM(self.settings, format=ENTITY_SCHEMA)  # constrained decoding
            else:
                from rag.llm import make_llm

                made = make_llm(self.settings)
                assert made is not None  # backend 'none' is refused in __init__
                self._llm = made
        return self._llm

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": self.settings.backend, "model": self.settings.model, "prompt": PROMPT_VERSION}

    def cache_key(self, text: str) -> str:
        """What identifies one extraction: model, prompt and the exact text."""
        payload = json.dumps([self.fingerprint(), text], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def extract(self, text: str) -> list[str]:
        """The model's entity names for ``text``. Raises :class:`LLMError` (timeouts included) or
        :class:`LLMStreamError` for a reply that is not the JSON asked for."""
        deadline = time.monotonic() + self.timeout_s
        stream = self.llm.stream_chat(build_messages(text))  # type: ignore[arg-type]
        pieces: list[str] = []
        try:
            for piece in stream:
                pieces.append(piece)
                if time.monotonic() > deadline:
                    raise LLMTimeoutError(f"entity extraction took longer than {self.timeout_s:g} s")
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        try:
            return parse_entities("".join(pieces))
        except ValueError as exc:
            raise LLMStreamError(f"the model's entity list is not valid JSON: {exc}") from None

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()


def is_fatal(exc: LLMError) -> bool:
    """Errors that will repeat for every chunk: stop asking the model for the rest of a sync."""
    from rag.errors import LLMUnavailableError, ModelNotFoundError

    return isinstance(exc, LLMUnavailableError | ModelNotFoundError)
