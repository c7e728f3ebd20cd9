"""Tests for rag.sparse.tokenize.Tokenizer."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.errors import ConfigError
from rag.sparse.tokenize import CHINESE_STOPWORDS, ENGLISH_STOPWORDS, Tokenizer

MIXED = "用 docker run --gpus all 启动 ollama，端口 11434"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer()


# ---------------------------------------------------------------- code-like tokens


@pytest.mark.parametrize(
    ("text", "whole", "parts"),
    [
        ("snake_case_name", "snake_case_name", ["snake", "case", "name"]),
        ("dotted.module.names", "dotted.module.names", ["dot", "modul", "name"]),
        ("--gpus", "--gpus", ["gpus"]),
        ("Qwen2-7B-Instruct", "qwen2-7b-instruct", ["qwen2", "7b", "instruct"]),
        ("127.0.0.1:11434", "127.0.0.1:11434", ["127.0.0.1", "127", "11434"]),
        ("sentence-transformers", "sentence-transformers", ["sentenc", "transform"]),
        ("/usr/local/bin", "/usr/local/bin", ["usr", "local", "bin"]),
        ("rag/sparse/tokenize.py", "rag/sparse/tokenize.py", ["tokenize.py", "rag", "spars", "token", "py"]),
        ("./run.sh", "./run.sh", ["run.sh", "run", "sh"]),
        (".env", ".env", ["env"]),
    ],
)
def test_code_tokens_whole_then_parts(tok: Tokenizer, text: str, whole: str, parts: list[str]) -> None:
    assert tok(text) == [whole, *parts]


def test_code_tokens_without_parts() -> None:
    tok = Tokenizer(code_parts=False)
    assert tok("pip install sentence-transformers --upgrade") == [
        "pip",
        "instal",
        "sentence-transformers",
        "--upgrade",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-e", ["-e"]),
        ("C++", ["c++"]),
        ("C#", ["c#"]),
        ("11434", ["11434"]),
        ("docker run -e OLLAMA_HOST=0.0.0.0", ["docker", "run", "-e", "ollama_host=0.0.0.0", "ollama_host"]),
    ],
)
def test_short_code_tokens(tok: Tokenizer, text: str, expected: list[str]) -> None:
    out = tok(text)
    assert out[: len(expected)] == expected


def test_dash_is_a_flag_only_at_token_start(tok: Tokenizer) -> None:
    assert tok("x - y") == ["x"]  # "y" is a stopword, the lone dash is punctuation
    assert tok("foo--bar")[0] == "foo--bar"
    assert "--bar" not in tok("foo--bar")


def test_trailing_punctuation_is_not_part_of_code(tok: Tokenizer) -> None:
    assert tok("see rag/errors.py.") == ["see", "rag/errors.py", "errors.py", "rag", "error", "py"]


# ---------------------------------------------------------------- mixed zh/en, CJK modes


def test_mixed_sentence_default(tok: Tokenizer) -> None:
    out = tok(MIXED)
    # unigram+bigram for the CJK runs; "all" is an English stopword; the full-width comma splits
    assert out == [
        "用",
        "docker",
        "run",
        "--gpus",
        "gpus",
        "启",
        "动",
        "启动",
        "ollama",
        "端",
        "口",
        "端口",
        "11434",
    ]


def test_mixed_sentence_jieba() -> None:
    out = Tokenizer(cjk="jieba")(MIXED)
    assert out == ["用", "docker", "run", "--gpus", "gpus", "启动", "ollama", "端口", "11434"]


def test_cjk_modes() -> None:
    text = "中华人民共和国的首都"
    bigrams = ["中华", "华人", "人民", "民共", "共和", "和国", "国的", "的首", "首都"]
    assert Tokenizer(cjk="bigram")(text) == bigrams
    assert Tokenizer(cjk="jieba", jieba_mode="accurate")(text) == ["中华人民共和国", "首都"]
    search = Tokenizer(cjk="jieba", jieba_mode="search")(text)
    assert search[-2:] == ["中华人民共和国", "首都"] and "人民" in search
    both = Tokenizer(cjk="jieba+bigram")(text)
    assert both[:2] == ["中华人民共和国", "首都"] and "华人" in both
    uni = Tokenizer(cjk="unigram+bigram")(text)
    assert "的" not in uni  # stopword character
    assert uni[:3] == ["中", "华", "人"] and "国的" in uni and "首都" in uni


def test_single_character_run_in_bigram_mode() -> None:
    assert Tokenizer(cjk="bigram")("用 docker") == ["用", "docker"]


def test_chinese_and_latin_without_spaces(tok: Tokenizer) -> None:
    assert tok("用Qwen2模型") == ["用", "qwen2", "模", "型", "模型"]


def test_kana_and_hangul_are_cjk_runs() -> None:
    assert Tokenizer(cjk="bigram")("カタカナ 한국어") == ["カタ", "タカ", "カナ", "한국", "국어"]


# ---------------------------------------------------------------- normalisation, stemming, stopwords


def test_full_width_input_equals_half_width(tok: Tokenizer) -> None:
    assert tok("ｄｏｃｋｅｒ　ｒｕｎ　－－ｇｐｕｓ　１１４３４") == tok("docker run --gpus 11434")
    assert tok("端口：１２７．０．０．１：１１４３４") == tok("端口:127.0.0.1:11434")


def test_stemming() -> None:
    assert Tokenizer()("Running runners connected connections") == ["run", "runner", "connect", "connect"]
    assert Tokenizer(stem=False)("Running connections") == ["running", "connections"]


def test_stopwords() -> None:
    text = "What is the port of the server 的 服务"
    assert Tokenizer(cjk="jieba")(text) == ["port", "server", "服务"]
    assert Tokenizer(cjk="jieba", stopwords=False)(text) == [
        "what",
        "is",
        "the",
        "port",
        "of",
        "the",
        "server",
        "的",
        "服务",
    ]
    assert {"the", "is", "what"} <= ENGLISH_STOPWORDS
    assert {"的", "了", "是", "在"} <= CHINESE_STOPWORDS


def test_stopwords_never_drop_code_tokens(tok: Tokenizer) -> None:
    assert tok("--all") == ["--all"]
    assert tok("is_the_best")[0] == "is_the_best"


# ---------------------------------------------------------------- edges, determinism, pickling, options


@pytest.mark.parametrize("text", ["", " ", "\n\t  \u3000", "，。！？", "--- ... ///", "___"])
def test_empty_and_punctuation_only(tok: Tokenizer, text: str) -> None:
    assert tok(text) == []


def test_deterministic_and_picklable() -> None:
    tok = Tokenizer(cjk="jieba+bigram")
    first = tok(MIXED)
    assert tok(MIXED) == first
    clone = pickle.loads(pickle.dumps(tok))
    assert clone(MIXED) == first
    assert clone.fingerprint() == tok.fingerprint()
    assert clone == tok


def test_fingerprint_changes_with_every_option() -> None:
    base = Tokenizer()
    assert base.fingerprint() == Tokenizer().fingerprint()
    variants = [
        Tokenizer(cjk="bigram"),
        Tokenizer(cjk="jieba"),
        Tokenizer(cjk="jieba", jieba_mode="search"),
        Tokenizer(cjk="jieba+bigram"),
        Tokenizer(stem=False),
        Tokenizer(stopwords=False),
        Tokenizer(code_parts=False),
    ]
    prints = {base.fingerprint(), *(v.fingerprint() for v in variants)}
    assert len(prints) == len(variants) + 1
    assert all(p.startswith("tok-") for p in prints)


def test_invalid_options() -> None:
    with pytest.raises(ConfigError):
        Tokenizer(cjk="trigram")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Tokenizer(jieba_mode="fast")  # type: ignore[arg-type]


def test_long_input_speed(tok: Tokenizer) -> None:
    line = "用 docker run --gpus all 启动 ollama，端口 127.0.0.1:11434。Running sentence-transformers。\n"
    text = line * 5000
    t0 = time.perf_counter()
    out = tok(text)
    elapsed = time.perf_counter() - t0
    assert out == tok(line) * 5000  # no state carried across lines
    assert elapsed < 5.0  # ~0.4 MB of text; measured well under a second on 2 cores


def test_default_tokenizer_never_loads_jieba() -> None:
    code = (
        "import sys\n"
        "from rag.sparse.tokenize import Tokenizer\n"
        "assert 'jieba' not in sys.modules and 'Stemmer' not in sys.modules\n"
        "print(Tokenizer()('中文 running'))\n"
        "assert 'jieba' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['中', '文', '中文', 'run']"
