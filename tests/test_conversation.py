"""Follow-up questions: the condense step with a model (the Ollama-protocol test server) and
without one, and answers to follow-ups retrieved from the rewritten question."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from rag.answer import FinalEvent, TokenEvent
from rag.conversation import (
    HISTORY_MESSAGES,
    TURN_CHARS,
    ConversationFinalEvent,
    RewriteEvent,
    carry_terms,
    clean_reply,
    condense,
    condense_messages,
    conversation_stream,
    converse,
    key_terms,
)
from rag.engine import Engine
from rag.errors import InputError, LLMUnavailableError
from rag.llm import clear_context_cache
from rag.llm.base import ChatMessage
from rag.llm.ollama import OllamaLLM
from rag.settings import AnswerSettings, LLMSettings, Settings
from tests.answer_corpus import index_notes
from tests.ollama_stub import LLMStub, Script, closed_port

MODEL = "stub-model"
NOTES = {
    "ollama.md": "# Ollama\n\nOllama 是本地运行大模型的工具。它默认监听 11434 端口。\n",
    "nginx.md": "# Nginx\n\nNginx 是一个反向代理服务器。它默认监听 80 端口。\n",
    "qdrant.md": "# Qdrant\n\nQdrant is a vector database. It listens on port 6333 by default.\n",
}
ABOUT_OLLAMA: list[ChatMessage] = [
    {"role": "user", "content": "Ollama 是什么？"},
    {"role": "assistant", "content": "Ollama 是本地运行大模型的工具 [1]。"},
]
ABOUT_NGINX: list[ChatMessage] = [
    {"role": "user", "content": "Nginx 是什么？"},
    {"role": "assistant", "content": "Nginx 是一个反向代理服务器 [1]。"},
]
FOLLOW_UP = "它默认监听哪个端口？"
ALWAYS = AnswerSettings.model_validate(
    {"min_evidence": 0.0}
)  # no refusal on weak evidence: these tests are about the turns


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return index_notes(tmp_path_factory.mktemp("conversation"), NOTES)


@pytest.fixture
def engine(indexed: Settings) -> Iterator[Engine]:
    clear_context_cache()
    with Engine.open(indexed) as e:
        yield e


def ollama(url: str, **kw: Any) -> OllamaLLM:
    return OllamaLLM(LLMSettings.model_validate({"url": url, "model": MODEL, "retries": 0, **kw}))


# -- without a model: key terms -------------------------------------------------------------------


def test_key_terms_drop_stopwords_question_words_and_pronouns() -> None:
    assert key_terms("Ollama 是什么？") == ["Ollama"]
    assert key_terms("它默认监听哪个端口？") == ["监听", "端口"]
    assert key_terms("Which port does `ollama serve` use on 127.0.0.1:11434?") == [
        "port",
        "ollama",
        "serve",
        "use",
        "127.0.0.1:11434",
    ]


def test_carry_terms_appends_what_the_question_lacks_newest_turn_first() -> None:
    history: list[ChatMessage] = [
        {"role": "user", "content": "How do I install Docker?"},
        {"role": "assistant", "content": "Use the convenience script [1]."},
        {"role": "user", "content": "And Ollama inside it?"},
    ]
    assert (
        carry_terms("Which port does it use?", history)
        == "Which port does it use? Ollama inside install Docker"
    )
    assert (
        carry_terms("Which port does Ollama use?", history[:2])
        == "Which port does Ollama use? install Docker"
    )
    assert carry_terms("anything", []) == "anything"


def test_no_history_leaves_the_question_alone() -> None:
    rewrite = condense(f"  {FOLLOW_UP} ", [], None)
    assert (rewrite.standalone, rewrite.method, rewrite.changed) == (FOLLOW_UP, "none", False)
    only_assistant: list[ChatMessage] = [{"role": "assistant", "content": "Hello"}]
    assert condense(FOLLOW_UP, only_assistant, None).method == "none"
    with pytest.raises(InputError):
        condense("  ", ABOUT_OLLAMA, None)


def test_without_a_model_terms_are_carried() -> None:
    rewrite = condense(FOLLOW_UP, ABOUT_OLLAMA, None)
    assert rewrite.method == "terms" and rewrite.standalone == f"{FOLLOW_UP} Ollama" and rewrite.note is None


# -- with a model: the condense call --------------------------------------------------------------


def test_condense_call_with_the_stub_model() -> None:
    with LLMStub({MODEL: 4096}, Script(tokens=["Ollama ", "默认监听哪个端口？"])) as stub:
        llm = ollama(stub.url)
        rewrite = condense(FOLLOW_UP, ABOUT_OLLAMA, llm)
        llm.close()
        assert rewrite.method == "llm" and rewrite.standalone == "Ollama 默认监听哪个端口？"
        body = stub.chats()[0].body
    assert body is not None
    system, user = body["messages"]
    assert system["role"] == "system" and "Simplified Chinese" in system["content"]
    assert "User: Ollama 是什么？\nAssistant: Ollama 是本地运行大模型的工具 [1]。" in user["content"]
    assert user["content"].rstrip().endswith(f"Last question: {FOLLOW_UP}\nRewritten question:")


def test_condense_history_is_bounded() -> None:
    history: list[ChatMessage] = []
    for i in range(10):
        history.append({"role": "user", "content": f"question {i} " + "x" * 1000})
        history.append({"role": "assistant", "content": f"answer {i}"})
    user = condense_messages("and then?", history)[1]["content"]
    turns = user.split("<conversation>\n")[1].split("\n</conversation>")[0].split("\n")
    assert len(turns) == HISTORY_MESSAGES
    assert turns[0].startswith("User: question 7 ") and turns[-1] == "Assistant: answer 9"
    assert max(len(t) for t in turns) <= len("User: ") + TURN_CHARS + 1


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Rewritten question: Ollama 默认监听哪个端口？", "Ollama 默认监听哪个端口？"),
        ("“Ollama 默认监听哪个端口？”\n这是改写。", "Ollama 默认监听哪个端口？"),
        ("Which port does Ollama listen on?", None),  # not the question's language
        ("   \n ", None),
        ("端口" * 200, None),  # far longer than a rewrite of this question can be
        ("Ollama 是本地运行大模型的工具。", None),  # an answer: the question's terms are gone
        ("Ollama 使用什么协议？", None),  # another question: neither 监听 nor 端口 kept
        ("Ollama 默认监听 11434 端口。", None),  # the terms kept, but a statement: an answer
        ("Ollama 用哪个端口？", "Ollama 用哪个端口？"),  # half the key terms kept is enough
    ],
)
def test_clean_reply(reply: str, expected: str | None) -> None:
    assert clean_reply(reply, FOLLOW_UP) == expected


def test_an_unusable_rewrite_falls_back_to_terms() -> None:
    with LLMStub({MODEL: 4096}, Script(tokens=["The port is 11434."])) as stub:
        llm = ollama(stub.url)
        rewrite = condense(FOLLOW_UP, ABOUT_OLLAMA, llm)
        llm.close()
    assert rewrite.method == "terms" and rewrite.standalone == f"{FOLLOW_UP} Ollama"
    assert rewrite.note is not None and "not a usable question" in rewrite.note


def test_an_unreachable_model_falls_back_to_terms() -> None:
    llm = ollama(f"http://127.0.0.1:{closed_port()}", num_ctx=2048)
    rewrite = condense(FOLLOW_UP, ABOUT_OLLAMA, llm)
    llm.close()
    assert rewrite.method == "terms" and rewrite.standalone == f"{FOLLOW_UP} Ollama"
    assert rewrite.note is not None and "cannot reach Ollama" in rewrite.note


class DeadServer:
    """An adapter whose server refuses every connection; it counts how often it was tried."""

    def __init__(self) -> None:
        self.tries = 0

    def info(self) -> dict[str, str]:
        return {"backend": "ollama", "model": MODEL}

    def _refuse(self) -> LLMUnavailableError:
        self.tries += 1
        return LLMUnavailableError("cannot reach Ollama at http://127.0.0.1:9", hint="start it")

    def context_length(self) -> int:
        raise self._refuse()

    def stream_chat(self, messages: Any) -> Iterator[str]:
        raise self._refuse()

    def close(self) -> None:
        pass


def test_a_model_found_unreachable_while_rewriting_is_not_tried_again(engine: Engine) -> None:
    dead = DeadServer()
    events = list(conversation_stream(engine, dead, FOLLOW_UP, ABOUT_OLLAMA, settings=ALWAYS))  # type: ignore[arg-type]
    assert dead.tries == 1  # the condense call only; the answer fell back without a second round of retries
    rewrite = events[0]
    assert isinstance(rewrite, RewriteEvent) and rewrite.rewrite.method == "terms"
    final = events[-1]
    assert isinstance(final, ConversationFinalEvent)
    assert final.answer.kind == "extractive"
    assert final.answer.note is not None and "cannot reach Ollama" in final.answer.note
    assert final.answer.hits[0].chunk.source == "ollama.md"


def test_a_separate_rewrite_model_that_is_down_does_not_skip_the_answer_model(engine: Engine) -> None:
    dead, answering = DeadServer(), DeadServer()
    events = list(
        conversation_stream(engine, answering, FOLLOW_UP, ABOUT_OLLAMA, settings=ALWAYS, condense_llm=dead)  # type: ignore[arg-type]
    )
    assert dead.tries == 1 and answering.tries == 1  # the answer's model was tried on its own
    final = events[-1]
    assert isinstance(final, ConversationFinalEvent) and final.answer.kind == "extractive"


# -- answers to follow-ups ------------------------------------------------------------------------


def test_follow_up_is_answered_about_what_it_refers_to(engine: Engine) -> None:
    alone = engine.search(FOLLOW_UP, 3, "hybrid")
    assert {alone[0].chunk.source, alone[1].chunk.source} == {
        "ollama.md",
        "nginx.md",
    }  # a tie: "它" names nothing
    for history, source in ((ABOUT_OLLAMA, "ollama.md"), (ABOUT_NGINX, "nginx.md")):
        final, rewrite = converse(engine, None, FOLLOW_UP, history, settings=ALWAYS)
        assert rewrite.method == "terms"
        assert final.hits[0].chunk.source == source
        assert final.question == rewrite.standalone
        assert final.citations and final.citations[0].source == source


def test_conversation_stream_events_with_the_stub_model(engine: Engine) -> None:
    def responder(body: dict[str, Any]) -> Script:
        if "Rewritten question:" in body["messages"][-1]["content"]:
            return Script(tokens=["Nginx 默认监听哪个端口？"])
        assert "Nginx 默认监听哪个端口？" in body["messages"][-1]["content"]  # the answer call
        return Script(tokens=["Nginx 默认监听 80 端口 [1]。"])

    with LLMStub({MODEL: 4096}, responder) as stub:
        llm = ollama(stub.url)
        events = list(conversation_stream(engine, llm, FOLLOW_UP, ABOUT_NGINX, settings=ALWAYS))
        llm.close()
        assert len(stub.chats()) == 2
    assert isinstance(events[0], RewriteEvent) and events[0].rewrite.standalone == "Nginx 默认监听哪个端口？"
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == "Nginx 默认监听 80 端口 [1]。"
    final = events[-1]
    assert isinstance(final, ConversationFinalEvent) and isinstance(final, FinalEvent)
    body = final.as_dict()
    assert body["rewrite"] == {
        "question": FOLLOW_UP,
        "standalone": "Nginx 默认监听哪个端口？",
        "method": "llm",
        "note": None,
    }
    assert body["citations"][0]["source"] == "nginx.md"
    json.dumps(body)
