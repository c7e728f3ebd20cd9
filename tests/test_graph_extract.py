"""Rule-based entity extraction on Chinese, English and code-heavy notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.graph.extract import Mention, RuleExtractor, is_junk, segment
from rag.graph.normalize import AliasTable, normalize_key

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "notes"


@pytest.fixture(scope="module")
def ex() -> RuleExtractor:
    return RuleExtractor()


def by_key(mentions: list[Mention]) -> dict[str, Mention]:
    return {m.key: m for m in mentions}


CODE_NOTE = """# Docker 封装

## 用 GPU 启动 Ollama

Ollama 默认监听 11434 端口。用 `--gpus all` 把所有显卡交给容器：

```bash
sudo docker run -d --gpus all -p 8000:8000 --name ollama ollama/ollama
docker exec -it ollama ollama pull qwen2.5:7b-instruct
OLLAMA_KEEP_ALIVE=-1 ollama serve
```

用 `docker commit` 把容器保存为镜像，`ollama ps` 查看模型是否在 GPU 上。
模型 Qwen2-7B-Instruct 和 BAAI/bge-m3 都可以用 sentence-transformers 加载，
先 `pip install sentence-transformers`，在 Python 里设置 `options.num_ctx` 为 8192，地址是 http://localhost:11434/api/chat 。
环境变量 OLLAMA_HOST 决定监听地址，batch_size 设成 256，7B 模型要 16GB 显存。
"""


def test_code_heavy_note(ex: RuleExtractor) -> None:
    found = by_key(ex.extract(CODE_NOTE))
    kinds = {k: m.kind for k, m in found.items()}
    # commands: from the shell block, inline code and prose
    for cmd in ("docker run", "docker exec", "docker commit", "ollama ps", "ollama serve", "pip install"):
        assert kinds[normalize_key(cmd)] == "command", cmd
    assert kinds["docker"] == "command"
    # packages and models, including the model name inside org/name; a lowercase hyphenated
    # word is a package in code (`pip install sentence-transformers`), a phrase in prose
    for name in (
        "qwen2.5:7b-instruct",
        "Qwen2-7B-Instruct",
        "BAAI/bge-m3",
        "bge-m3",
        "sentence-transformers",
    ):
        assert kinds[normalize_key(name)] == "package", name
    # identifiers, flags, env vars
    for ident in ("options.num_ctx", "OLLAMA_HOST", "OLLAMA_KEEP_ALIVE", "batch_size", "--gpus", "--name"):
        assert kinds[normalize_key(ident)] == "code", ident
    # ports only in a port context; hosts from URLs
    assert kinds["11434"] == "port" and kinds["8000"] == "port"
    assert kinds["localhost"] == "host"
    assert "8192" not in found and "256" not in found  # numbers that are not ports
    # acronyms and Chinese terms
    assert kinds["gpu"] == "name" and kinds["baai"] == "name"
    for term in ("容器", "镜像", "显存", "模型"):
        assert kinds[term] == "term", term
    # junk never appears
    for junk in ("7b", "16gb", "-it", "-d", "的", "用", "所有", "sudo"):
        assert junk not in found, junk
    assert found["11434"].tf == 2  # the prose port and the URL's
    assert found["ollama"].surface == "ollama"  # most frequent spelling (4x ollama, 2x Ollama)


def test_chinese_terms_and_compounds(ex: RuleExtractor) -> None:
    text = "做中文检索时，向量数据库和词法检索要融合。上下文长度不够时模型会静默截断，问题的方法很多。"
    found = by_key(ex.extract(text))
    for term in ("中文检索", "检索", "向量", "数据库", "向量数据库", "词法检索", "上下文", "上下文长度"):
        assert term in found, term
    assert found["检索"].tf == 2
    for junk in (
        "问题",
        "方法",
        "的",
        "时",
        "很多",
        "要",
    ):  # generic nouns, function words, single characters
        assert junk not in found, junk
    assert all(m.kind == "term" for m in found.values())


def test_traditional_chinese_gives_the_simplified_entities(ex: RuleExtractor) -> None:
    simp = {m.key for m in ex.extract("向量数据库和机器学习模型的部署")}
    trad = {m.key for m in ex.extract("向量數據庫和機器學習模型的部署")}
    assert simp == trad and {"向量数据库", "模型", "部署"} <= simp


def test_english_names_and_noun_phrases(ex: RuleExtractor) -> None:
    text = (
        "The incubation period of COVID-19 is estimated to be 5 days. Patients with severe acute "
        "respiratory syndrome were admitted to Wuhan Jinyintan Hospital. However, the World Health "
        "Organization said SARS-CoV-2 binds ACE2 receptors, and Remdesivir was tested."
    )
    found = by_key(ex.extract(text))
    expected = {
        "incubationperiod": "phrase",
        "severeacuterespiratorysyndrome": "phrase",
        "wuhanjinyintanhospital": "name",
        "worldhealthorganization": "name",
        "covid19": "package",
        "sarscov2": "package",
        "ace2": "name",
        "remdesivir": "name",  # capitalised inside a sentence
    }
    assert {k: found[k].kind for k in expected} == expected
    # sentence-initial capitals and function words are not entities
    for junk in ("patients", "the", "however", "days", "5days", "5"):
        assert junk not in found, junk


def test_alias_table_merges_variants_and_finds_literal_names() -> None:
    aliases = AliasTable.from_mapping({"Hugging Face": ["HF", "huggingface", "抱抱脸"]})
    ex = RuleExtractor(aliases)
    found = by_key(ex.extract("模型在 HF 上下载，也叫抱抱脸；Hugging Face 的 hub 很大。"))
    hf = found["huggingface"]
    assert hf.kind == "alias" and hf.surface == "Hugging Face" and hf.tf == 3
    assert "hf" not in found and "抱抱脸" not in found
    assert "huggingface" in ex.query_keys("怎么从 hf 下载模型")


def test_salience_order_is_deterministic(ex: RuleExtractor) -> None:
    first = ex.extract(CODE_NOTE)
    assert first == ex.extract(CODE_NOTE)
    assert [m.salience for m in first] == sorted((m.salience for m in first), reverse=True)
    assert first[0].kind in ("command", "package")  # technical names outrank plain terms


def test_query_keys_include_word_runs(ex: RuleExtractor) -> None:
    keys = ex.query_keys("sentence transformers 怎么加载 bge-m3？ollama 用GPU启动")
    for key in ("sentencetransformers", "bgem3", "ollama", "gpu"):
        assert key in keys, key
    assert "怎么" not in keys  # function words are never candidates


@pytest.mark.parametrize(
    ("key", "kind", "junk"),
    [
        ("11434", "port", False),
        ("11434", "term", True),  # a bare number is only an entity as a port
        ("7b", "package", True),
        ("568m", "package", True),
        ("v1.5", "package", True),
        ("1.2.3", "code", True),
        ("deadbeef01", "code", True),
        ("the", "phrase", True),
        ("问题", "term", True),
        ("容", "term", True),  # one CJK character
        ("gb", "name", True),
        ("x" * 65, "term", True),
        ("--", "code", True),
        ("docker", "command", False),
        ("e5", "package", False),
        ("向量", "term", False),
    ],
)
def test_is_junk_golden(key: str, kind: str, junk: bool) -> None:
    assert is_junk(key, kind) is junk


def test_rjieba_segments_like_jieba() -> None:
    """rjieba (when installed) is only a faster jieba: same dictionary, same words."""
    rjieba = pytest.importorskip("rjieba")
    import re

    from rag.graph.normalize import CJK_CHARS
    from rag.sparse.tokenize import _jieba

    runs = re.findall(
        f"[{CJK_CHARS}]+", "\n".join(p.read_text(encoding="utf-8") for p in SAMPLES.rglob("*.*"))
    )
    assert len(runs) > 100
    fast = rjieba.Jieba()
    for run in runs:
        assert fast.cut(run, False) == list(_jieba().cut(run, HMM=False)), run
    assert segment("向量数据库") == list(_jieba().cut("向量数据库", HMM=False))
