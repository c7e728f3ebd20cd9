"""Conversations: a follow-up question is rewritten into a standalone one before retrieval.

"它默认监听哪个端口？" after a question about Ollama retrieves nothing useful on
its own: "它" (it) names nothing the indexes know. :func:`condense` rewrites it
from the earlier turns, then :func:`conversation_stream` answers the rewritten
question with :func:`rag.answer.answer_stream`, unchanged (retrieval, evidence
check, prompt and citations all see one standalone question).

Two ways to rewrite, chosen by whether a model is configured:

``llm``
    One short condense call: a fixed system prompt, the last
    :data:`HISTORY_MESSAGES` messages (each cut to :data:`TURN_CHARS`
    characters), the follow-up, and the instruction to reply with one question in
    the follow-up's language. The reply is checked (first line, not empty, not
    much longer than the question, same language, a question when the follow-up
    is one, at least :data:`MIN_KEPT` of the follow-up's key terms kept: a small
    model tends to answer instead of rewriting); a reply that fails the check, or a model error, falls back to
    ``terms`` and says so in ``note``.
``terms``
    Without a model: the key terms of the previous user turns (words and code
    tokens that are not stopwords or question words, newest turn first, at most
    :data:`MAX_TERMS`) are appended to the question, so the sparse and dense
    legs see what "it" stood for. Assistant turns are not used: they quote
    passages and would pull retrieval towards the previous answer's wording.

With no earlier turn the question is used as it is (``none``). Figures on a
multi-turn set built from xquad (recall@5 of the follow-up with and without the
conversation): ``bench/results/multiturn.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from rag.answer import Answer, Event, FinalEvent, answer_stream, detect_language
from rag.errors import InputError, LLMError, LLMUnavailableError
from rag.llm.base import LLM, ChatMessage, LLMInfo
from rag.settings import AnswerSettings
from rag.sparse.tokenize import CHINESE_STOPWORDS, ENGLISH_STOPWORDS

if TYPE_CHECKING:
    from rag.engine import Engine

RewriteMethod = Literal["none", "llm", "terms"]

HISTORY_MESSAGES = 6  # the last three exchanges
TURN_CHARS = 400  # of each earlier message given to the condense call
USER_TURNS = 2  # previous user turns whose terms are carried without a model
MAX_TERMS = 8
MAX_REPLY_CHARS = 400  # the condense reply is read up to here, then the stream is closed
MIN_KEPT = 0.5  # share of the follow-up's key terms a rewrite must keep

CONDENSE_SYSTEM = """You rewrite the last question of a conversation so that it can be understood on its own.
Replace pronouns and vague references ("it", "that", "它", "这个") with what they refer to in the conversation.
Keep every specific term of the question. Do not answer the question. Do not add anything else.
Write the rewritten question in {language}, on one line, and reply with that question only."""

CONDENSE_USER = """<conversation>
{turns}
</conversation>
Last question: {question}
Rewritten question:"""

_LANGUAGE_NAME = {"zh": "Simplified Chinese (简体中文)", "en": "English"}
_ROLE_NAME = {"user": "User", "assistant": "Assistant", "system": "System"}

# Question words and pronouns beyond the sparse tokenizer's stopwords: they name nothing.
_EXTRA_STOP = frozenset(
    [
        "it",
        "its",
        "they",
        "them",
        "their",
        "this",
        "that",
        "these",
        "those",
        "he",
        "she",
        "him",
        "her",
        "his",
        "hers",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "many",
        "much",
        "also",
        "does",
        "did",
        "do",
        "is",
        "are",
        "was",
        "were",
        "name",
        "named",
        "called",
        "它",
        "它们",
        "他",
        "她",
        "他们",
        "她们",
        "这",
        "那",
        "这里",
        "那里",
        "这样",
        "那样",
        "其",
        "该",
        "此",
        "默认",
        "请问",
        "一下",
        "可以",
        "能",
        "会",
        "要",
        "用",
    ]
)
_TERM_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9_.:/+#@-]*[A-Za-z0-9+#]|[A-Za-z0-9]|[\u3400-\u9fff\uf900-\ufaff]+"
)
_PREFIX_RE = re.compile(
    r"^\s*(?:rewritten question|standalone question|question|改写后的问题|改写|问题)\s*[:：]\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Rewrite:
    """How a question was made standalone: ``standalone`` is what retrieval and the model see."""

    question: str
    standalone: str
    method: RewriteMethod
    note: str | None = None
    # The model could not be reached while rewriting: the answer need not try it again.
    unreachable: LLMUnavailableError | None = field(default=None, compare=False, repr=False)

    @property
    def changed(self) -> bool:
        return self.standalone != self.question

    def as_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "standalone": self.standalone,
            "method": self.method,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class RewriteEvent:
    """The rewritten question, sent before the answer's tokens so it can be shown first."""

    rewrite: Rewrite
    type: Literal["rewrite"] = "rewrite"

    def as_dict(self) -> dict[str, Any]:
        return self.rewrite.as_dict()


@dataclass(frozen=True, slots=True)
class ConversationFinalEvent(FinalEvent):
    """The whole answer, as :class:`FinalEvent`, with the ``rewrite`` object added."""

    rewrite: Rewrite | None = None

    def as_dict(self) -> dict[str, Any]:
        return answer_dict(self.answer, self.rewrite)


def answer_dict(answer: Answer, rewrite: Rewrite | None) -> dict[str, Any]:
    """The ``rag ask --json`` object, plus ``rewrite`` when the question came with a conversation."""
    out = answer.as_dict()
    if rewrite is not None:
        out["rewrite"] = rewrite.as_dict()
    return out


def _text(message: ChatMessage | dict[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def key_terms(text: str) -> list[str]:
    """The words and code tokens of ``text`` that can carry a topic, in order, without repeats:
    stopwords, question words and pronouns dropped, Chinese segmented with jieba."""
    import rjieba

    out: dict[str, None] = {}
    for m in _TERM_RE.finditer(text):
        token = m.group(0)
        if "\u3400" <= token[0] <= "\uffff":
            words = [w for w in rjieba.cut(token) if len(w) >= 2]
        else:
            words = [token] if len(token) >= 2 or token.isdigit() else []
        for word in words:
            low = word.lower()
            if low in ENGLISH_STOPWORDS or low in CHINESE_STOPWORDS or low in _EXTRA_STOP:
                continue
            out.setdefault(word, None)
    return list(out)


def carry_terms(question: str, history: Sequence[ChatMessage]) -> str:
    """``question`` followed by the key terms of the previous user turns that it lacks."""
    have = {t.lower() for t in key_terms(question)}
    lowered = question.lower()
    users = [_text(m) for m in history if m.get("role") == "user"][-USER_TURNS:]
    carried: list[str] = []
    for turn in reversed(users):
        for term in key_terms(turn):
            low = term.lower()
            if low in have or low in lowered:
                continue
            have.add(low)
            carried.append(term)
    carried = carried[:MAX_TERMS]
    return f"{question} {' '.join(carried)}" if carried else question


def condense_messages(question: str, history: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The condense call's messages: fixed rules, then the bounded conversation and the question."""
    turns = []
    for m in [m for m in history if m.get("role") in ("user", "assistant")][-HISTORY_MESSAGES:]:
        text = " ".join(_text(m).split())
        if len(text) > TURN_CHARS:
            text = text[:TURN_CHARS] + "…"
        turns.append(f"{_ROLE_NAME[m['role']]}: {text}")
    language = _LANGUAGE_NAME[detect_language(question)]
    return [
        {"role": "system", "content": CONDENSE_SYSTEM.format(language=language)},
        {"role": "user", "content": CONDENSE_USER.format(turns="\n".join(turns), question=question)},
    ]


def clean_reply(reply: str, question: str) -> str | None:
    """The rewritten question in a condense reply, or None when the reply is not one."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        return None
    text = _PREFIX_RE.sub("", lines[0]).strip().strip("\"'“”「」`").strip()
    if not text or len(text) > max(3 * len(question), len(question) + 200):
        return None
    if detect_language(text) != detect_language(question):
        return None
    if question.rstrip().endswith(("?", "？")) and not text.endswith(("?", "？")):
        return None  # a statement: the model answered
    wanted = [t.lower() for t in key_terms(question)]
    low = text.lower()
    if wanted and sum(t in low for t in wanted) < MIN_KEPT * len(wanted):
        return None  # not the question reworded: an answer, or another question
    return text


def _ask_model(llm: LLM, messages: list[ChatMessage]) -> str:
    stream = llm.stream_chat(messages)
    parts: list[str] = []
    try:
        for piece in stream:
            parts.append(piece)
            if sum(map(len, parts)) > MAX_REPLY_CHARS or "\n" in piece.lstrip():
                break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return "".join(parts)


def condense(question: str, history: Sequence[ChatMessage], llm: LLM | None) -> Rewrite:
    """``question`` made standalone from ``history`` (earlier messages, oldest first), by the
    method in the module docstring."""
    question = question.strip()
    if not question:
        raise InputError("the question is empty")
    earlier = [m for m in history if m.get("role") in ("user", "assistant") and _text(m).strip()]
    if not any(m["role"] == "user" for m in earlier):
        return Rewrite(question, question, "none")
    note: str | None = None
    if llm is not None:
        try:
            reply = _ask_model(llm, condense_messages(question, earlier))
        except LLMError as exc:
            note = (
                f"the question was not rewritten by the model ({exc.one_line()}); carried key terms instead"
            )
            if isinstance(exc, LLMUnavailableError):
                return Rewrite(question, carry_terms(question, earlier), "terms", note, exc)
        else:
            cleaned = clean_reply(reply, question)
            if cleaned is not None:
                return Rewrite(question, cleaned, "llm")
            note = "the model's rewrite was not a usable question; carried key terms instead"
    return Rewrite(question, carry_terms(question, earlier), "terms", note)


class _Unreachable:
    """``llm`` as it was found a moment ago: unreachable. The answer's first request raises the
    same error, so :func:`rag.answer.answer_stream` takes its extractive fallback (or, with the
    fallback off, reports the error) without trying the server again."""

    def __init__(self, llm: LLM, error: LLMUnavailableError) -> None:
        self._llm = llm
        self._error = error

    def info(self) -> LLMInfo:
        return self._llm.info()

    def context_length(self) -> int:
        raise self._error

    def stream_chat(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        raise self._error

    def close(self) -> None:
        self._llm.close()


def conversation_stream(
    engine: Engine,
    llm: LLM | None,
    question: str,
    history: Sequence[ChatMessage],
    *,
    k: int | None = None,
    settings: AnswerSettings | None = None,
    condense_llm: LLM | None = None,
) -> Iterator[RewriteEvent | Event]:
    """Answer ``question`` as the next turn of ``history``: one :class:`RewriteEvent`, then the
    events of :func:`rag.answer.answer_stream` for the standalone question, the last one a
    :class:`ConversationFinalEvent`. ``condense_llm`` rewrites (default: ``llm``; ``None``
    with ``llm=None``: key terms)."""
    rewrite = condense(question, history, condense_llm if condense_llm is not None else llm)
    yield RewriteEvent(rewrite)
    if rewrite.unreachable is not None and llm is not None and condense_llm in (None, llm):
        # The same server just failed every retry: the answer falls back at once instead of
        # spending the retries (and their back-off) a second time.
        llm = _Unreachable(llm, rewrite.unreachable)
    for event in answer_stream(engine, llm, rewrite.standalone, k=k, settings=settings):
        if isinstance(event, FinalEvent):
            yield ConversationFinalEvent(event.answer, rewrite=rewrite)
        else:
            yield event


def converse(
    engine: Engine,
    llm: LLM | None,
    question: str,
    history: Sequence[ChatMessage],
    *,
    k: int | None = None,
    settings: AnswerSettings | None = None,
) -> tuple[Answer, Rewrite]:
    """:func:`conversation_stream` collected: the answer and how the question was rewritten."""
    rewrite: Rewrite | None = None
    final: Answer | None = None
    for event in conversation_stream(engine, llm, question, history, k=k, settings=settings):
        if isinstance(event, RewriteEvent):
            rewrite = event.rewrite
        elif isinstance(event, FinalEvent):
            final = event.answer
    assert final is not None and rewrite is not None
    return final, rewrite
