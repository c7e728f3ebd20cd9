"""The Ollama adapter (the official ``ollama`` client) over real HTTP against a scripted Ollama-compatible server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from rag.errors import (
    ConfigError,
    LLMStreamError,
    LLMTimeoutError,
    LLMUnavailableError,
    ModelNotFoundError,
)
from rag.llm import LLM, clear_context_cache, make_llm
from rag.llm.base import ChatMessage
from rag.llm.ollama import OllamaLLM, choose_num_ctx, parse_show_context
from rag.llm.openai_compat import OpenAICompatLLM
from rag.settings import LLMSettings
from tests.ollama_stub import LLMStub, Script, closed_port

MODEL = "qwen2.5:7b-instruct"
MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "Answer from the documents."},
    {"role": "user", "content": "Which port?"},
]


@pytest.fixture(autouse=True)
def _fresh_context_cache() -> Iterator[None]:
    clear_context_cache()
    yield
    clear_context_cache()


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    with LLMStub({MODEL: 32768, "small:1b": 2048}) as s:
        yield s


_OPEN: list[OllamaLLM] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def make(url: str, **kw: Any) -> OllamaLLM:
    cfg: dict[str, Any] = {"url": url, "model": MODEL, "retries": 0, "retry_backoff_s": 0.01, **kw}
    llm = OllamaLLM(LLMSettings.model_validate(cfg))
    _OPEN.append(llm)
    return llm


def collect(llm: OllamaLLM) -> list[str]:
    return list(llm.stream_chat(MESSAGES))


# -- the happy path and num_ctx -------------------------------------------------------------------


def test_streams_tokens_and_sends_num_ctx_read_from_show(stub: LLMStub) -> None:
    llm = make(stub.url, num_ctx_max=8192, max_tokens=64, temperature=0.2)
    assert collect(llm) == ["Ollama listens", " on port 11434", " [1]."]
    assert collect(llm) == ["Ollama listens", " on port 11434", " [1]."]
    shows = [r for r in stub.requests if r.path == "/api/show"]
    assert len(shows) == 1, "the context length is looked up once per model"
    assert shows[0].body == {"model": MODEL}
    chats = stub.chats()
    assert len(chats) == 2
    body = chats[0].body
    assert body is not None
    assert body["stream"] is True and body["model"] == MODEL
    assert body["messages"] == MESSAGES
    # trained context 32768, capped by num_ctx_max
    assert body["options"] == {"num_ctx": 8192, "num_predict": 64, "temperature": 0.2}
    assert llm.last_stats["done_reason"] == "stop"
    llm.close()


def test_num_ctx_follows_the_model(stub: LLMStub) -> None:
    llm = make(stub.url, model="small:1b", num_ctx_max=8192)
    collect(llm)
    body = stub.chats()[0].body
    assert body is not None and body["options"]["num_ctx"] == 2048 == llm.context_length()


def test_modelfile_num_ctx_is_respected() -> None:
    with LLMStub({MODEL: 32768}, modelfile_num_ctx=16384) as s:
        llm = make(s.url, num_ctx_max=8192)
        collect(llm)
        body = s.chats()[0].body
        assert body is not None and body["options"]["num_ctx"] == 16384


def test_configured_num_ctx_needs_no_show(stub: LLMStub) -> None:
    llm = make(stub.url, num_ctx=4096)
    collect(llm)
    assert not [r for r in stub.requests if r.path == "/api/show"]
    body = stub.chats()[0].body
    assert body is not None and body["options"]["num_ctx"] == 4096


def test_parse_show_context_and_choice() -> None:
    show = {
        "parameters": "stop <|im_end|>\nnum_ctx 4096\ntemperature 0.7",
        "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768, "x.y": 1},
    }
    assert parse_show_context(show) == (4096, 32768)
    assert parse_show_context({"model_info": {"gemma3.context_length": 131072}}) == (None, 131072)
    assert parse_show_context({}) == (None, None)
    assert choose_num_ctx(None, 32768, 8192) == 8192
    assert choose_num_ctx(None, 2048, 8192) == 2048
    assert choose_num_ctx(16384, 32768, 8192) == 16384  # the Modelfile's choice wins over the cap
    assert choose_num_ctx(65536, 32768, 8192) == 32768  # never beyond what the model was trained for
    assert choose_num_ctx(None, None, 8192) == 4096


def test_list_models(stub: LLMStub) -> None:
    llm = make(stub.url)
    assert llm.list_models() == [MODEL, "small:1b"]
    assert [r.path for r in stub.requests] == ["/api/tags"]


def test_thinking_lines_are_not_answer_text() -> None:
    lines = [
        '{"message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": false}',
        '{"message": {"role": "assistant", "content": "11434 [1]"}, "done": false}',
        '{"message": {"role": "assistant", "content": ""}, "done": true, "eval_count": 2}',
    ]
    with LLMStub({MODEL: 4096}, Script(raw_lines=lines)) as s:
        assert collect(make(s.url)) == ["11434 [1]"]


def test_make_llm_builds_each_backend() -> None:
    ollama = make_llm(LLMSettings.model_validate({"backend": "ollama"}))
    openai = make_llm(LLMSettings.model_validate({"backend": "openai", "url": "http://127.0.0.1:8000/v1"}))
    assert isinstance(ollama, OllamaLLM) and isinstance(ollama, LLM)
    assert isinstance(openai, OpenAICompatLLM) and isinstance(openai, LLM)
    assert ollama.info() == {"backend": "ollama", "model": "qwen2.5:7b-instruct"}
    assert make_llm(LLMSettings.model_validate({"backend": "none"})) is None
    ollama.close()
    openai.close()


def test_url_without_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must start with http"):
        make("localhost:11434")


# -- failures -------------------------------------------------------------------------------------


def test_refused_connection_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    llm = make(url)
    t0 = time.monotonic()
    with pytest.raises(LLMUnavailableError) as err:
        collect(llm)
    assert time.monotonic() - t0 < 3
    line = err.value.one_line()
    assert line == f"cannot reach Ollama at {url} (start it with `ollama serve` or check RAG_LLM__URL)"


def test_refused_connection_is_retried_with_backoff() -> None:
    llm = make(f"http://127.0.0.1:{closed_port()}", retries=2, retry_backoff_s=0.1, num_ctx=2048)
    t0 = time.monotonic()
    with pytest.raises(LLMUnavailableError):
        collect(llm)
    assert time.monotonic() - t0 >= 0.3  # waited 0.1 + 0.2 between three attempts


def test_busy_server_is_retried_before_the_first_token(stub: LLMStub) -> None:
    stub.fail_next = [503]
    llm = make(stub.url, retries=1)
    assert collect(llm) == ["Ollama listens", " on port 11434", " [1]."]
    assert len(stub.chats()) == 2


def test_model_not_pulled(stub: LLMStub) -> None:
    llm = make(stub.url, model="llama3.2:1b")
    with pytest.raises(ModelNotFoundError) as err:
        collect(llm)
    line = err.value.one_line()
    assert line.startswith("model llama3.2:1b is not pulled")
    assert "run `ollama pull llama3.2:1b`" in line and MODEL in line  # lists what is pulled
    assert not stub.chats()


def test_model_not_pulled_on_chat_with_configured_num_ctx(stub: LLMStub) -> None:
    with pytest.raises(ModelNotFoundError, match="not pulled"):
        collect(make(stub.url, model="nope", num_ctx=2048))


def test_wrong_server_404_is_not_called_a_missing_model(stub: LLMStub) -> None:
    with pytest.raises(LLMStreamError) as err:
        collect(make(stub.url + "/not-ollama"))
    assert "is this an Ollama server" in err.value.one_line()


def test_no_first_token_in_time_is_a_timeout() -> None:
    with LLMStub({MODEL: 4096}, Script(headers_delay=3.0)) as s:
        llm = make(s.url, first_token_timeout_s=0.4, read_timeout_s=0.2)
        t0 = time.monotonic()
        with pytest.raises(LLMTimeoutError, match=r"sent no token within 0\.4 s"):
            collect(llm)
        assert time.monotonic() - t0 < 2.0
        assert len(s.chats()) == 1, "a timeout is not retried"


@pytest.mark.parametrize("where", ["headers", "body"])
def test_slow_first_token_is_not_an_error(where: str) -> None:
    # a cold model load: far longer than the between-token timeout, within the first-token one
    script = Script(headers_delay=0.8) if where == "headers" else Script(first_delay=0.8)
    with LLMStub({MODEL: 4096}, script) as s:
        llm = make(s.url, first_token_timeout_s=10, read_timeout_s=0.2)
        assert collect(llm) == ["Ollama listens", " on port 11434", " [1]."]


def test_stall_mid_stream_is_a_timeout() -> None:
    with LLMStub({MODEL: 4096}, Script(stall_after=1, stall=3.0)) as s:
        llm = make(s.url, first_token_timeout_s=5, read_timeout_s=0.3)
        got: list[str] = []
        t0 = time.monotonic()
        with pytest.raises(LLMTimeoutError, match=r"stopped sending tokens for 0\.3 s"):
            for piece in llm.stream_chat(MESSAGES):
                got.append(piece)
        assert got == ["Ollama listens"]
        assert time.monotonic() - t0 < 2.0


def test_error_mid_stream_is_raised_after_the_tokens_and_not_retried() -> None:
    with LLMStub({MODEL: 4096}, Script(error_after=2, error="CUDA error: out of memory")) as s:
        llm = make(s.url, retries=3)
        got: list[str] = []
        with pytest.raises(LLMStreamError, match="Ollama reported an error: CUDA error: out of memory"):
            for piece in llm.stream_chat(MESSAGES):
                got.append(piece)
        assert got == ["Ollama listens", " on port 11434"]
        assert len(s.chats()) == 1


def test_dropped_connection_mid_stream() -> None:
    with LLMStub({MODEL: 4096}, Script(drop_after=1)) as s:
        got: list[str] = []
        with pytest.raises(LLMStreamError, match="in the middle of the answer"):
            for piece in make(s.url, retries=2).stream_chat(MESSAGES):
                got.append(piece)
        assert got == ["Ollama listens"]
        assert len(s.chats()) == 1


def test_stream_that_ends_without_done_is_an_error() -> None:
    lines = ['{"message": {"role": "assistant", "content": "half"}, "done": false}']
    with (
        LLMStub({MODEL: 4096}, Script(raw_lines=lines)) as s,
        pytest.raises(LLMStreamError, match="before the answer was complete"),
    ):
        collect(make(s.url))


def test_garbage_line_is_an_error() -> None:
    with (
        LLMStub({MODEL: 4096}, Script(raw_lines=["<html>proxy error</html>"])) as s,
        pytest.raises(LLMStreamError, match="not JSON"),
    ):
        collect(make(s.url))


def test_server_error_status_is_reported() -> None:
    with (
        LLMStub({MODEL: 4096}, Script(status=500, error="llama runner process has terminated")) as s,
        pytest.raises(LLMStreamError, match="HTTP 500: llama runner process has terminated"),
    ):
        collect(make(s.url))


def test_stopping_early_releases_the_stream_quickly() -> None:
    with LLMStub({MODEL: 4096}, Script(tokens=[f"t{i} " for i in range(50)], delay=0.2)) as s:
        llm = make(s.url)
        stream = llm.stream_chat(MESSAGES)
        assert next(stream) == "t0 "
        t0 = time.monotonic()
        stream.close()  # type: ignore[attr-defined]
        assert time.monotonic() - t0 < 1.0
        s.responder = lambda body: Script(tokens=["again"])
        assert collect(llm) == ["again"]


# -- pull, embed and constrained output -----------------------------------------------------------


def test_pull_reports_progress_and_the_model_is_then_served(stub: LLMStub) -> None:
    llm = make(stub.url, model="llama3.2:1b")
    seen: list[tuple[str, int, int]] = []
    llm.pull(progress=lambda status, done, total: seen.append((status, done, total)))
    assert seen[0] == ("pulling manifest", 0, 0)
    assert ("pulling 1f2e", 40, 100) in seen and seen[-1][0] == "success"
    assert "llama3.2:1b" in llm.list_models()


def test_pull_failure_is_one_line(stub: LLMStub) -> None:
    with pytest.raises(LLMStreamError) as err:
        make(stub.url).pull("missing:7b")
    assert err.value.one_line() == "Ollama replied HTTP 500: pull model manifest: file does not exist"


def test_embed_returns_one_vector_per_text(stub: LLMStub) -> None:
    llm = make(stub.url)
    assert llm.embed(["a b", "ollama"]) == [[3.0, 1.0, 1.0], [6.0, 0.0, 1.0]]
    body = stub.requests[-1].body
    assert body is not None and body["input"] == ["a b", "ollama"] and body["model"] == MODEL


def test_embed_with_a_model_not_pulled(stub: LLMStub) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        make(stub.url).embed(["x"], model="nomic-embed-text")
    assert err.value.one_line() == (
        f"model nomic-embed-text is not pulled on the Ollama server at {stub.url} "
        "(run `ollama pull nomic-embed-text`)"
    )


def test_embed_on_a_closed_port_is_unavailable() -> None:
    with pytest.raises(LLMUnavailableError, match="cannot reach Ollama"):
        make(f"http://127.0.0.1:{closed_port()}").embed(["x"])


def test_format_is_sent_with_every_chat(stub: LLMStub) -> None:
    schema = {"type": "object", "properties": {"port": {"type": "integer"}}}
    llm = OllamaLLM(
        LLMSettings.model_validate({"url": stub.url, "model": MODEL, "retries": 0}), format=schema
    )
    _OPEN.append(llm)
    collect(llm)
    body = stub.chats()[0].body
    assert body is not None and body["format"] == schema
