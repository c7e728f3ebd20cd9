"""The OpenAI-compatible adapter over real HTTP against a scripted server-sent-events server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from rag.errors import LLMError, LLMStreamError, LLMTimeoutError, LLMUnavailableError, ModelNotFoundError
from rag.llm import clear_context_cache
from rag.llm.base import ChatMessage
from rag.llm.openai_compat import OpenAICompatLLM, model_context_length
from rag.settings import LLMSettings
from tests.ollama_stub import LLMStub, Script, closed_port

MODEL = "Qwen/Qwen2.5-7B-Instruct"
MESSAGES: list[ChatMessage] = [{"role": "user", "content": "Which port?"}]
_OPEN: list[OpenAICompatLLM] = []


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    clear_context_cache()
    yield
    clear_context_cache()
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    with LLMStub({MODEL: 32768}) as s:
        yield s


def make(url: str, **kw: Any) -> OpenAICompatLLM:
    cfg: dict[str, Any] = {
        "backend": "openai",
        "url": url,
        "model": MODEL,
        "retries": 0,
        "retry_backoff_s": 0.01,
        **kw,
    }
    llm = OpenAICompatLLM(LLMSettings.model_validate(cfg))
    _OPEN.append(llm)
    return llm


def test_streams_sse_tokens(stub: LLMStub) -> None:
    llm = make(stub.url + "/v1", api_key="sk-local", max_tokens=50, temperature=0.0)
    assert list(llm.stream_chat(MESSAGES)) == ["Ollama listens", " on port 11434", " [1]."]
    chat = stub.chats()[0]
    assert chat.path == "/v1/chat/completions"
    assert chat.body == {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "max_tokens": 50,
        "temperature": 0.0,
    }
    assert chat.headers["authorization"] == "Bearer sk-local"
    assert llm.last_stats["finish_reason"] == "stop"
    assert llm.info() == {"backend": "openai", "model": MODEL}


@pytest.mark.parametrize(
    ("meta", "expected"), [("max_model_len", 8192), ("meta", 8192), ("context_length", 8192)]
)
def test_context_length_from_models(meta: str, expected: int) -> None:
    with LLMStub({MODEL: 32768}, openai_meta=meta) as s:
        assert make(s.url + "/v1", num_ctx_max=8192).context_length() == expected
    with LLMStub({MODEL: 2048}, openai_meta=meta) as s:
        assert make(s.url + "/v1", num_ctx_max=8192).context_length() == 2048


def test_model_context_length_fields() -> None:
    assert model_context_length({"id": "m", "max_model_len": 4096}) == 4096
    assert model_context_length({"id": "m", "meta": {"n_ctx_train": 131072}}) == 131072
    assert model_context_length({"id": "m"}) is None


def test_model_not_served(stub: LLMStub) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        list(make(stub.url + "/v1", model="gpt-4o").stream_chat(MESSAGES))
    assert "does not serve model gpt-4o" in err.value.one_line()
    assert MODEL in err.value.one_line()
    assert not stub.chats()


def test_error_event_mid_stream() -> None:
    with LLMStub({MODEL: 4096}, Script(error_after=1, error="engine dead")) as s:
        got: list[str] = []
        with pytest.raises(LLMStreamError, match="engine dead"):
            for piece in make(s.url + "/v1", retries=2).stream_chat(MESSAGES):
                got.append(piece)
        assert got == ["Ollama listens"]
        assert len(s.chats()) == 1


def test_refused_connection() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(LLMUnavailableError) as err:
        list(make(url).stream_chat(MESSAGES))
    assert err.value.one_line() == (
        f"cannot reach the OpenAI-compatible server at {url} (start it or check RAG_LLM__URL)"
    )


def test_first_token_timeout_and_slow_first_token() -> None:
    with LLMStub({MODEL: 4096}, Script(first_delay=2.0)) as s:
        t0 = time.monotonic()
        with pytest.raises(LLMTimeoutError):
            list(make(s.url + "/v1", first_token_timeout_s=0.3).stream_chat(MESSAGES))
        assert time.monotonic() - t0 < 1.5
    with LLMStub({MODEL: 4096}, Script(first_delay=0.6)) as s:
        llm = make(s.url + "/v1", first_token_timeout_s=10, read_timeout_s=0.2)
        assert list(llm.stream_chat(MESSAGES)) == ["Ollama listens", " on port 11434", " [1]."]


def test_unauthorized_says_which_setting() -> None:
    with (
        LLMStub({MODEL: 4096}, Script(status=401, error="invalid api key")) as s,
        pytest.raises(LLMError) as err,
    ):
        list(make(s.url + "/v1").stream_chat(MESSAGES))
    assert "RAG_LLM__API_KEY" in err.value.one_line()
