"""`rag ask` through click's runner, against the scripted Ollama-compatible server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from rag.answer import EXTRACTIVE_LABEL, REFUSAL
from rag.llm import clear_context_cache
from rag.settings import Settings
from tests.answer_corpus import index_notes
from tests.ollama_stub import LLMStub, Script, closed_port

MODEL = "stub-model"
QUESTION = "Which port does Ollama listen on?"
CONTRACT = {"answer", "citations", "hits", "llm"}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return index_notes(tmp_path_factory.mktemp("ask"))


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_context_cache()
    yield
    clear_context_cache()


def ask(
    indexed: Settings, url: str, *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> Result:
    full_env = {
        "RAG_EMBEDDING__MODEL": "none",
        "RAG_LLM__URL": url,
        "RAG_LLM__MODEL": MODEL,
        "RAG_LLM__RETRIES": "0",
        **(env or {}),
    }
    return CliRunner().invoke(
        cli, ["ask", *args, "--data-dir", str(indexed.data_dir)], env=full_env, input=input
    )


def test_ask_json_contract(indexed: Settings) -> None:
    with LLMStub({MODEL: 8192}, Script(tokens=["Port 11434", " [1]."])) as stub:
        res = ask(indexed, stub.url, QUESTION, "--json", "-k", "3")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) >= CONTRACT
    assert out["answer"] == "Port 11434 [1]."
    assert out["llm"] == {"backend": "ollama", "model": MODEL}
    assert out["citations"][0]["n"] == 1 and out["citations"][0]["source"] == "ollama-en.md"
    assert {"n", "chunk_id", "source", "page", "quote"} <= set(out["citations"][0])
    assert 1 <= len(out["hits"]) <= 3
    assert out["kind"] == "generated" and out["refused"] is False and out["invalid_citations"] == []


def test_ask_streams_and_lists_sources(indexed: Settings) -> None:
    with LLMStub({MODEL: 8192}, Script(tokens=["Ollama listens", " on port 11434 [1]", " [7]."])) as stub:
        res = ask(indexed, stub.url, QUESTION)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("Ollama listens on port 11434 [1].")
    assert "Sources" in res.stdout and "[1] ollama-en.md" in res.stdout
    assert "11434" in res.stdout.split("Sources")[1]  # the quote
    assert "removed citations of blocks that were not sent: [7]" in res.stderr
    assert f"ollama/{MODEL}" in res.stderr


def test_ask_no_llm(indexed: Settings) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    res = ask(indexed, url, QUESTION, "--no-llm", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["llm"] is None and out["kind"] == "extractive"
    assert out["answer"].startswith(EXTRACTIVE_LABEL["en"])
    assert out["citations"] and out["note"] is None


def test_ask_unreachable_falls_back_and_says_so(indexed: Settings) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    res = ask(indexed, url, "怎样用 docker 在 GPU 上启动 ollama？")
    assert time.monotonic() - t0 < 10
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(EXTRACTIVE_LABEL["zh"])
    assert "docker/gpu.md" in res.stdout
    assert f"cannot reach Ollama at {url}" in res.stderr


def test_ask_unreachable_without_fallback_is_one_line_error(indexed: Settings) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    res = ask(indexed, url, QUESTION, env={"RAG_ANSWER__FALLBACK": "false"})
    assert res.exit_code == 4
    assert res.stderr.strip().splitlines() == [
        f"error: cannot reach Ollama at {url} (start it with `ollama serve` or check RAG_LLM__URL)"
    ]
    assert "Traceback" not in res.output


def test_ask_model_not_pulled(indexed: Settings) -> None:
    with LLMStub({"other:1b": 4096}) as stub:
        res = ask(indexed, stub.url, QUESTION, "--json")
    assert res.exit_code == 4
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: model {MODEL} is not pulled") and f"ollama pull {MODEL}" in lines[0]
    assert res.stdout == ""


def test_ask_error_mid_stream(indexed: Settings) -> None:
    with LLMStub({MODEL: 8192}, Script(error_after=1, error="runner crashed")) as stub:
        res = ask(indexed, stub.url, QUESTION)
    assert res.exit_code == 4
    assert res.stdout.startswith("Ollama listens")  # what was streamed stays
    assert res.stderr.strip().splitlines() == ["error: Ollama reported an error: runner crashed"]


def test_ask_timeout_does_not_hang(indexed: Settings) -> None:
    with LLMStub({MODEL: 8192}, Script(headers_delay=5.0)) as stub:
        t0 = time.monotonic()
        res = ask(indexed, stub.url, QUESTION, env={"RAG_LLM__FIRST_TOKEN_TIMEOUT_S": "0.5"})
        assert time.monotonic() - t0 < 4
    assert res.exit_code == 4
    assert res.stderr.startswith(
        "error: Ollama sent no token within 0.5 s (raise RAG_LLM__FIRST_TOKEN_TIMEOUT_S"
    )


def test_ask_refuses_on_weak_evidence(indexed: Settings) -> None:
    with LLMStub({MODEL: 8192}) as stub:
        res = ask(indexed, stub.url, "What is the capital of France?", "--json")
        assert not stub.chats()
    assert res.exit_code == 0
    out = json.loads(res.stdout)
    assert out["answer"] == REFUSAL["en"] and out["refused"] is True and out["llm"] is None


def test_ask_reads_the_question_from_stdin(indexed: Settings) -> None:
    res = ask(indexed, "http://127.0.0.1:9", "-", "--no-llm", "--json", input="num_ctx 有什么用？\n")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["language"] == "zh"


def test_ask_empty_question(indexed: Settings) -> None:
    res = ask(indexed, "http://127.0.0.1:9", "  ", "--no-llm")
    assert res.exit_code == 2 and res.stderr.startswith("error: the question is empty")


def test_ask_without_an_index(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["ask", "hello", "--no-llm", "--data-dir", str(tmp_path / "none")])
    assert res.exit_code == 3 and "rag ingest" in res.stderr
