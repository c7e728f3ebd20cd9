"""Extractive answers: which lines of the retrieved notes are quoted, on a small realistic notes folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rag.answer import (
    EXTRACTIVE_LABEL,
    ContextBlock,
    answer,
    answer_units,
    extractive_text,
    find_citations,
    pick_extracts,
    score_units,
)
from rag.engine import Engine
from rag.models import Chunk
from rag.retrieval.search import Hit
from rag.settings import Settings
from rag.sparse.tokenize import Tokenizer
from tests.answer_corpus import index_notes

# Modelled on real Chinese ML-infra notes: bold-only "headings", labels with the value on the
# next line, commands in fenced and unfenced code, pasted error messages, Python signatures.
NOTES: dict[str, str] = {
    "llm/ollama部署.md": (
        "# Ollama 部署笔记\n\n"
        "**Ollama常用命令**\n\n"
        "- `ollama list`：列出本地模型\n"
        "- `ollama ps`：查看正在运行的模型\n\n"
        "## 用 GPU 启动 ollama\n\n"
        "先装好 nvidia-container-toolkit，然后：\n\n"
        "```bash\n"
        "docker run -d --gpus all -v ollama:/root/.ollama -p 11434:11434 --name ollama ollama/ollama\n"
        "```\n\n"
        "## 报错\n\n"
        "启动时报错：Error: could not connect to ollama app, is it running? 这时先检查容器是否在运行。\n"
    ),
    "python/pip换源.md": (
        "# pip 换源\n\n"
        "下载太慢的时候换成国内的源。\n\n"
        "国内镜像：\n"
        "https://pypi.tuna.tsinghua.edu.cn/simple\n\n"
        "临时使用：\n\n"
        "```\n"
        "pip install -i https://pypi.tuna.tsinghua.edu.cn/simple some-package\n"
        "```\n"
    ),
    "llm/attention代码.md": (
        "# 多头注意力\n\n"
        "```python\n"
        "class MultiHeadAttention(nn.Module):\n"
        "    def __init__(\n"
        "        self,\n"
        "        d_model: int,\n"
        "        num_heads: int,\n"
        "        dropout: float = 0.1,\n"
        "    ):\n"
        "        super().__init__()\n"
        "        self.head_dim = d_model // num_heads\n"
        "```\n\n"
        "num_heads 要能整除 d_model，否则 head_dim 不是整数。\n"
    ),
    "docker/docker笔记.md": (
        "# Docker 常用\n\n"
        "## 容器\n\n"
        "重新启动停掉的容器：docker start 3f2a9c1b7d44\n\n"
        "进入容器：\n"
        "docker exec -it ollama bash\n\n"
        "## 镜像\n\n"
        "把容器保存为镜像用 docker commit，导出用 docker save -o app.tar app:latest。\n"
    ),
}

GPU_COMMAND = "docker run -d --gpus all -v ollama:/root/.ollama -p 11434:11434 --name ollama ollama/ollama"
MIRROR = "https://pypi.tuna.tsinghua.edu.cn/simple"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return index_notes(tmp_path_factory.mktemp("extractive"), NOTES)


@pytest.fixture
def engine(indexed: Settings) -> Iterator[Engine]:
    with Engine.open(indexed) as e:
        yield e


def quoted(text: str) -> list[str]:
    """The quoted units of an extractive answer (the label line dropped)."""
    lines = text.splitlines()
    assert lines[0] in EXTRACTIVE_LABEL.values()
    return [line for line in lines[1:] if line.strip()]


# -- units ------------------------------------------------------------------------------------------


def units_of(text: str) -> list[tuple[str, str]]:
    return [(u.kind, text[u.start : u.end]) for u in answer_units(text)]


def test_headings_bold_lines_and_bare_labels_are_never_units() -> None:
    text = "# 标题\n\n**Ollama常用命令**\n\n国内镜像：\nhttps://mirrors.example.cn/simple?x=1\n\n正文一句。第二句！\n"
    got = units_of(text)
    assert got == [
        ("line", "国内镜像：\nhttps://mirrors.example.cn/simple?x=1"),
        ("sentence", "正文一句。"),
        ("sentence", "第二句！"),
    ]
    contexts = [u.context for u in answer_units(text)]
    assert contexts == ["标题 Ollama常用命令"] * 3


def test_commands_are_never_cut() -> None:
    text = (
        "装好以后：docker ps; docker logs -f ollama 看日志。\n"
        "cd /srv/app; git pull && docker compose up -d --build\n"
        "Version 1.2.3 is out. See http://a.b/c?d=1;e=2 now.\n"
    )
    got = units_of(text)
    assert ("line", "cd /srv/app; git pull && docker compose up -d --build") in got
    assert ("sentence", "Version 1.2.3 is out.") in got
    assert ("sentence", "See http://a.b/c?d=1;e=2 now.") in got
    # a ';' inside prose still ends a clause, but never one inside backticks
    inline = "用 `a; b` 连接两条命令；这样就行。"
    assert units_of(inline) == [("sentence", "用 `a; b` 连接两条命令；"), ("sentence", "这样就行。")]


def test_short_code_block_is_one_unit_long_one_is_lines_with_their_comments() -> None:
    short = "```bash\nexport A=1\npython run.py\n```\n"
    assert units_of(short) == [("code", "export A=1\npython run.py")]
    body = "\n".join(f"echo step{i}" for i in range(7))
    long = f"```\n# 第一步：拉镜像\ndocker pull ollama/ollama\ndocker run \\\n  --gpus all x\n{body}\n```\n"
    got = units_of(long)
    assert got[0] == ("code", "# 第一步：拉镜像\ndocker pull ollama/ollama")
    assert got[1] == ("code", "docker run \\\n  --gpus all x")
    assert got[2:] == [("code", f"echo step{i}") for i in range(7)]


# -- scoring ----------------------------------------------------------------------------------------


def block(n: int, text: str, heading: tuple[str, ...] = ()) -> ContextBlock:
    chunk = Chunk(f"c{n}", "d", f"n{n}.md", 0, text, 0, len(text), None, heading)
    hit = Hit(rank=n, chunk=chunk, score=1.0, scores={"sparse": 1.0, "dense": None, "graph": None})
    return ContextBlock(n, hit, text)


def test_command_under_a_matching_heading_beats_prose_that_shares_words() -> None:
    tok = Tokenizer()
    text = NOTES["llm/ollama部署.md"]
    scored = score_units("怎样用 docker 在 GPU 上启动 ollama？", [block(1, text)], tok)
    assert scored[0].text == GPU_COMMAND
    assert all(not e.text.startswith(("#", "**")) for e in scored)


def test_idf_weights_prefer_the_rare_term() -> None:
    tok = Tokenizer()
    blocks = [block(1, "The ollama server starts fast. Keepalive defaults to five minutes.")]
    question = "ollama server keepalive"
    flat = score_units(question, blocks, tok)
    assert flat[0].text == "The ollama server starts fast."  # two shared terms beat one
    common = {"ollama": 0.1, "server": 0.1}
    weighted = score_units(question, blocks, tok, lambda t: common.get(t, 3.0))
    assert weighted[0].text == "Keepalive defaults to five minutes."  # the rare term wins


def test_top_hit_wins_a_tie_and_repeats_are_quoted_once() -> None:
    tok = Tokenizer()
    same = "默认端口是 11434。"
    blocks = [block(1, same), block(2, same), block(3, "端口 11434 也可以改成别的。")]
    picked = pick_extracts(score_units("默认端口是多少", blocks, tok))
    assert picked[0].block.n == 1
    assert [e.text for e in picked].count(same) == 1


def test_a_line_that_only_repeats_the_question_is_not_quoted() -> None:
    tok = Tokenizer()
    text = "怎样查看 GPU 占用？\n用 nvidia-smi 查看 GPU 占用。"
    scored = score_units("怎样查看 GPU 占用", [block(1, text)], tok)
    assert scored[0].text == "用 nvidia-smi 查看 GPU 占用。"


# -- the whole path on the notes fixture ------------------------------------------------------------


def test_gpu_question_quotes_the_docker_run_line(engine: Engine) -> None:
    final = answer(engine, None, "怎样用 docker 在 GPU 上启动 ollama？")
    assert final.kind == "extractive"
    lines = quoted(final.text)
    assert GPU_COMMAND in lines[0]  # the whole command, first
    assert all("常用命令" not in line and "could not connect" not in line for line in lines)
    assert final.citations[0].source == "llm/ollama部署.md"


def test_mirror_question_quotes_the_url_under_the_label(engine: Engine) -> None:
    final = answer(engine, None, "pip 国内镜像地址是什么？")
    lines = quoted(final.text)
    assert MIRROR in lines[0]
    assert not any(line.rstrip(" []0123456789").endswith(("：", ":")) for line in lines)


@pytest.mark.parametrize(
    "question",
    [
        "怎样用 docker 在 GPU 上启动 ollama？",
        "pip 国内镜像地址是什么？",
        "怎么进入容器",
        "num_heads 有什么要求",
    ],
)
def test_no_quote_is_a_heading_a_bold_line_or_a_bare_label(engine: Engine, question: str) -> None:
    final = answer(engine, None, question)
    lines = quoted(final.text)
    assert lines
    for line in lines:
        body = line.removeprefix("- ").rsplit(" [", 1)[0].strip("` ")
        assert not body.startswith(("#", "**")), line
        assert not body.endswith(("：", ":")), line
    numbers = find_citations(final.text)
    assert set(numbers) == {c.n for c in final.citations}
    assert len(lines) == len(set(lines))  # nothing quoted twice


# -- prose of PDFs and pasted pages ------------------------------------------------------------------


def test_a_hard_wrapped_paragraph_is_read_as_sentences_across_its_lines() -> None:
    text = (
        "The radiology department was divided into four areas: contaminated, semicontaminated,\n"
        "buffer, and clean areas (Figure 1). The contaminated area is connected to the fever clinic\n"
        "and includes the fever accessway.\n"
        "- a list item stays its own unit\n"
    )
    got = units_of(text)
    assert got[0] == (
        "sentence",
        "The radiology department was divided into four areas: contaminated, semicontaminated,\n"
        "buffer, and clean areas (Figure 1).",
    )
    assert got[1][1].endswith("fever clinic\nand includes the fever accessway.")
    assert got[-1] == ("sentence", "- a list item stays its own unit")


def test_short_note_lines_and_commands_are_not_joined() -> None:
    text = "装好以后重启\ndocker restart ollama\n默认端口 11434\n"
    assert units_of(text) == [
        ("sentence", "装好以后重启"),
        ("line", "docker restart ollama"),
        ("sentence", "默认端口 11434"),
    ]


def test_the_sentences_around_the_best_one_are_quoted_with_it() -> None:
    tok = Tokenizer()
    text = (
        "Several vectors were compared in mice. NDV has a number of appealing qualities as a vaccine "
        "vector. Its pathogenicity is determined by the fusion protein, so it is easily attenuated.\n\n"
        "Other work used adenoviruses."
    )
    body, _ = extractive_text("What is the appealing quality of the NDV vector?", [block(1, text)], tok, "en")
    passage = quoted(body)[0]
    assert "Its pathogenicity is determined by the fusion protein" in passage  # the answer follows
    assert "compared in mice" in passage  # and the sentence before, in text order
    assert "adenoviruses" not in passage  # never across a paragraph break


def test_a_figure_label_loses_to_the_sentence_that_defines_the_term() -> None:
    tok = Tokenizer()
    text = "R0 (red) vs R(FO) (black)\nR0, the basic reproduction number, is the number of persons one case infects."
    scored = score_units("What is R0?", [block(1, text)], tok)
    assert scored[0].text.startswith("R0, the basic reproduction number")
