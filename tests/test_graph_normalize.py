"""Entity keys (golden table) and the user's alias table."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.errors import ConfigError
from rag.graph.normalize import (
    AliasTable,
    load_alias_table,
    normalize,
    normalize_key,
    to_halfwidth,
    to_simplified,
)


@pytest.mark.parametrize(
    ("surface", "key"),
    [
        # case and separators: one package, four spellings
        ("sentence-transformers", "sentencetransformers"),
        ("sentence_transformers", "sentencetransformers"),
        ("Sentence Transformers", "sentencetransformers"),
        ("SentenceTransformers", "sentencetransformers"),
        ("Qwen2-7B-Instruct", "qwen27binstruct"),
        ("qwen2 7b instruct", "qwen27binstruct"),
        # dots, colons and slashes carry meaning and stay
        ("qwen2.5:7b-instruct", "qwen2.5:7binstruct"),
        ("BAAI/bge-m3", "baai/bgem3"),
        ("options.num_ctx", "options.numctx"),
        # a flag keeps its dashes
        ("--gpus", "--gpus"),
        ("-p", "-p"),
        # full width letters, digits and the ideographic space
        ("ＤＯＣＫＥＲ　ｃｏｍｍｉｔ", "dockercommit"),
        ("ｐｏｒｔ １１４３４", "port11434"),
        # Traditional Chinese is Simplified
        ("機器學習", "机器学习"),
        ("資料庫", "资料库"),
        ("向量數據庫", "向量数据库"),
        # mixed scripts: the separator between them goes too
        ("GPU 服务器", "gpu服务器"),
        # quotes, brackets and trailing punctuation around the name
        ("  “Docker”。", "docker"),
        ("(ollama ps)", "ollamaps"),
        ("`num_ctx`", "numctx"),
        ("", ""),
        ("。", ""),
    ],
)
def test_normalize_key_golden(surface: str, key: str) -> None:
    assert normalize_key(surface) == key
    assert normalize(surface) == key  # the cached and the plain function agree


def test_halfwidth_and_simplified() -> None:
    assert to_halfwidth("Ｈｕｇｇｉｎｇ　Ｆａｃｅ") == "Hugging Face"
    assert to_simplified("後端 頭髮 臺灣") == "后端 头发 台湾"
    assert to_simplified("docker only") == "docker only"  # no CJK: untouched


def test_alias_table_resolves_variants_to_the_canonical_key() -> None:
    table = AliasTable.from_mapping({"Hugging Face": ["HF", "huggingface", "抱抱脸"], "Docker": "docker-ce"})
    assert table.resolve(normalize_key("HF")) == "huggingface"
    assert table.resolve(normalize_key("抱抱臉")) == "huggingface"  # Traditional spelling of a variant
    assert table.resolve(normalize_key("Docker CE")) == "docker"
    assert table.resolve("ollama") == "ollama"  # not in the table: itself
    assert table.canonical["huggingface"] == "Hugging Face"
    assert table.variants["huggingface"] == ("HF", "抱抱脸")  # "huggingface" is the canonical key itself
    assert len(table) == 2
    assert sorted(table.surfaces()) == sorted(["Hugging Face", "Docker", "HF", "抱抱脸", "docker-ce"])


def test_alias_table_fingerprint_follows_the_content() -> None:
    a = AliasTable.from_mapping({"Hugging Face": ["HF"]})
    b = AliasTable.from_mapping({"Hugging Face": ["hf"]})  # same keys
    c = AliasTable.from_mapping({"Hugging Face": ["HF", "抱抱脸"]})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert AliasTable().fingerprint() != a.fingerprint()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"A": ["x"], "B": ["X"]}, "listed under both"),
        ({"A": ["B"], "B": ["c"]}, "a canonical name and a variant"),
        ({"A": [1]}, "non-string variant"),
        ({"A": {"x": 1}}, "must be a string or a list"),
        ({"  ": ["x"]}, "empty canonical name"),
    ],
)
def test_alias_table_rejects_contradictions(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AliasTable.from_mapping(table)


def test_alias_table_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "aliases.toml"
    path.write_text(
        '[aliases]\n"Hugging Face" = ["HF", "huggingface"]\nOllama = "ollama-server"\n', encoding="utf-8"
    )
    table = AliasTable.load(path)
    assert table.resolve("hf") == "huggingface" and table.resolve("ollamaserver") == "ollama"

    (tmp_path / "bad.toml").write_text("[aliases\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        AliasTable.load(tmp_path / "bad.toml")
    (tmp_path / "none.toml").write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"no \[aliases\] table"):
        AliasTable.load(tmp_path / "none.toml")


def test_load_alias_table_default_and_configured(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert len(load_alias_table(None, data)) == 0  # no file: an empty table
    (data / "aliases.toml").write_text('[aliases]\nDocker = ["docker-ce"]\n', encoding="utf-8")
    assert load_alias_table(None, data).resolve("dockerce") == "docker"
    other = tmp_path / "mine.toml"
    other.write_text('[aliases]\nGit = ["git-scm"]\n', encoding="utf-8")
    configured = load_alias_table(other, data)
    assert configured.resolve("gitscm") == "git" and configured.resolve("dockerce") == "dockerce"
    with pytest.raises(ConfigError, match="alias table not found"):
        load_alias_table(tmp_path / "missing.toml", data)
