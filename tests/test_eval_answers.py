"""Golden tests for the answer metrics in eval.metrics and the query-language split in eval.runner."""

from __future__ import annotations

import pytest

from eval.metrics import answer_f1, answer_in_texts, answer_recall_at_k, exact_match, normalize_for_match
from eval.runner import cjk_share, percentile, query_language
from rag.errors import InputError


def test_normalize_for_match_folds_case_width_and_whitespace() -> None:
    assert normalize_for_match("  Python\t -M\n\nVENV ") == "python -m venv"
    assert (
        normalize_for_match("ＧＰＵ　１１４３４") == "gpu 11434"
    )  # NFKC: full-width letters, ideographic space


def test_answer_in_texts() -> None:
    texts = ["Create one with\npython  -m venv .venv", "其他"]
    assert answer_in_texts(texts, ["PYTHON -m VENV"])
    assert not answer_in_texts(texts, ["virtualenv"])
    assert not answer_in_texts(texts, ["", "   "])  # a blank gold answer matches nothing
    assert not answer_in_texts([], ["x"])


def test_answer_recall_at_k_golden() -> None:
    texts = ["no answer here", "端口是 11434。", "x"]
    assert answer_recall_at_k(texts, ["11434"], 1) == 0.0
    assert answer_recall_at_k(texts, ["11434"], 2) == 1.0
    assert answer_recall_at_k(texts, ["11434"], 10) == 1.0
    assert answer_recall_at_k(texts, ["端口是11434"], 10) == 0.0  # whitespace is collapsed, not removed
    assert answer_recall_at_k(texts, ["nope", "x"], 1) == 0.0
    assert answer_recall_at_k(texts, ["nope", "x"], 3) == 1.0


def test_answer_recall_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        answer_recall_at_k(["a"], ["a"], 0)
    with pytest.raises(InputError):
        answer_recall_at_k("a string", ["a"], 1)  # type: ignore[arg-type]


def test_exact_match_squad_normalisation() -> None:
    assert exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0  # article, case, punctuation
    assert exact_match("Eiffel", ["eiffel tower", "the tower"]) == 0.0
    assert exact_match("北京。", ["北京"]) == 1.0  # CJK punctuation removed
    assert exact_match("", []) == 0.0


def test_f1_hand_computed() -> None:
    # pred {eiffel, tower}, gold {eiffel, tower, in, paris}: P = 1, R = 0.5, F1 = 2/3
    assert answer_f1("the Eiffel tower", ["Eiffel Tower in Paris"]) == pytest.approx(2 / 3)
    # best over golds
    assert answer_f1("the Eiffel tower", ["Paris", "Eiffel Tower"]) == pytest.approx(1.0)
    # CJK characters are tokens: pred 北京大学 (4), gold 北京 (2), common 2: P = 0.5, R = 1, F1 = 2/3
    assert answer_f1("北京大学", ["北京"]) == pytest.approx(2 / 3)
    # mixed: pred [用, docker, 启, 动], gold [docker]: P = 1/4, R = 1, F1 = 0.4
    assert answer_f1("用 Docker 启动", ["docker"]) == pytest.approx(0.4)
    assert answer_f1("nothing shared", ["other words"]) == 0.0
    assert answer_f1("", ["gold"]) == 0.0


@pytest.mark.parametrize(
    ("text", "share", "lang"),
    [
        ("怎样用 docker 在 GPU 上启动 ollama？", 7 / 10, "zh"),
        ("ollama ps 显示 CPU", 2 / 5, "zh"),
        ("how do I say 你好 in English", 2 / 8, "en"),
        ("What is the incubation period of COVID-19?", 0.0, "en"),
        ("新冠病毒的潜伏期是多久", 1.0, "zh"),
        ("???", 0.0, "en"),
    ],
)
def test_query_language(text: str, share: float, lang: str) -> None:
    assert cjk_share(text) == pytest.approx(share)
    assert query_language(text) == lang


def test_percentile_interpolates() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) == 0.0
