"""Chunker: golden documents checked by hand, invariants on random documents, and bounded running time."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import pytest

from ingest.chunking import chunk_markdown, chunk_plain, measure
from rag.errors import ConfigError
from rag.models import ChunkSpan

Chunker = Callable[..., list[ChunkSpan]]


def texts(doc: str, chunks: list[ChunkSpan]) -> list[tuple[str, tuple[str, ...]]]:
    return [(doc[c.start : c.end], c.heading_path) for c in chunks]


# --- measure --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "units"),
    [
        # 用 docker run -- gpus all 启 动 ollama
        ("用 docker run --gpus all 启动 ollama", 9),
        ("你好，世界！", 4),  # CJK punctuation is free
        ("「引号」《书名》", 4),
        ("Qwen2-7B snake_case 3.14 v1.2.3", 4),  # identifiers and numbers are one unit each
        ("x = f(1, 2)", 8),  # x = f ( 1 , 2 )
        ("a->b", 3),
        ("```bash", 2),
        ("こんにちは 안녕하세요", 10),  # kana and hangul count like Han
        ("", 0),
        (" \n\t\u3000", 0),
        ("x" * 64, 1),
        ("x" * 65, 2),  # runs longer than 64 characters count per 64 characters
        ("x" * 128, 2),
        ("x" * 129, 3),
    ],
)
def test_measure_golden(text: str, units: int) -> None:
    assert measure(text) == units


def test_measure_is_additive_over_whitespace() -> None:
    rnd = random.Random(7)
    alphabet = ["中", "文", "。", "，", "a", "Z", "9", "_", "-", ".", "(", "|", "か", "한", "“", "x" * 70]
    for _ in range(300):
        a = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12)))
        b = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12)))
        assert measure(f"{a} {b}") == measure(a) + measure(b)


# --- golden documents -----------------------------------------------------------------------------------

NESTED = """# Docker 封装

Docker 把应用和依赖打包成镜像。

## 8. 运行容器

用 docker run --gpus all 启动 ollama。

## 9. 将容器保存为镜像

### 9.1 提交

执行 `docker commit` 即可。

# 附录

完。
"""


def test_nested_chinese_headings() -> None:
    chunks = chunk_markdown(NESTED, size=50, overlap=0)
    assert [(c.start, c.end) for c in chunks] == [(0, 32), (34, 80), (82, 132), (134, 142)]
    assert texts(NESTED, chunks) == [
        ("# Docker 封装\n\nDocker 把应用和依赖打包成镜像。", ("Docker 封装",)),
        ("## 8. 运行容器\n\n用 docker run --gpus all 启动 ollama。", ("Docker 封装", "8. 运行容器")),
        # "## 9." has no body of its own: it goes in front of its subsection's chunk.
        (
            "## 9. 将容器保存为镜像\n\n### 9.1 提交\n\n执行 `docker commit` 即可。",
            ("Docker 封装", "9. 将容器保存为镜像", "9.1 提交"),
        ),
        ("# 附录\n\n完。", ("附录",)),
    ]


def test_heading_stack_pops_to_the_right_level() -> None:
    doc = "# A\n## B\n### C\nx\n## D\ny\n# E\n"
    assert texts(doc, chunk_markdown(doc, size=50, overlap=0)) == [
        ("# A\n## B\n### C\nx", ("A", "B", "C")),
        ("## D\ny", ("A", "D")),
        ("# E", ("E",)),  # a body-less heading at the end is a chunk of its own
    ]


def test_heading_text_loses_inline_markup() -> None:
    doc = "## **粗体** `snake_case` [链接](http://x) <b>x</b> \\# 号 ##\n\n正文。\n"
    [chunk] = chunk_markdown(doc, size=50, overlap=0)
    assert chunk.heading_path == ("粗体 snake_case 链接 x # 号",)
    assert doc[chunk.start : chunk.end] == doc.strip()


FENCE = """## 安装

先安装依赖。然后运行脚本。

```bash
# 这不是标题
pip install -r requirements.txt
python main.py --port 8000
```

最后检查日志。
"""


def test_code_fence_is_not_split_and_hides_headings() -> None:
    # fence = ``` bash # 这 不 是 标 题 pip install - r requirements.txt python main.py -- port 8000 ```
    assert measure(FENCE[FENCE.index("```") : FENCE.rindex("```") + 3]) == 19
    assert texts(FENCE, chunk_markdown(FENCE, size=20, overlap=0)) == [
        ("## 安装\n\n先安装依赖。然后运行脚本。", ("安装",)),
        (
            "```bash\n# 这不是标题\npip install -r requirements.txt\npython main.py --port 8000\n```",
            ("安装",),
        ),
        ("最后检查日志。", ("安装",)),
    ]


def test_code_fence_larger_than_size_splits_on_lines() -> None:
    assert texts(FENCE, chunk_markdown(FENCE, size=12, overlap=0)) == [
        ("## 安装\n\n先安装依赖。", ("安装",)),  # the heading keeps the first sentence
        ("然后运行脚本。", ("安装",)),
        ("```bash\n# 这不是标题", ("安装",)),
        ("pip install -r requirements.txt\npython main.py --port 8000\n```", ("安装",)),
        ("最后检查日志。", ("安装",)),
    ]


def test_unclosed_fence_runs_to_the_end_and_splits_on_lines() -> None:
    doc = "前言\n\n```python\nimport os\n# 注释，不是标题\nprint(os.getcwd())\n"
    assert texts(doc, chunk_markdown(doc, size=5, overlap=0)) == [
        ("前言", ()),
        ("```python\nimport os", ()),
        ("# 注释，不是", ()),  # a code line longer than size is cut every size units
        ("标题", ()),
        ("print(os.getcwd())", ()),
    ]


def test_table_larger_than_size_splits_on_rows() -> None:
    doc = (
        "## 表格\n\n"
        "| 模型 | 显存 |\n|---|---|\n| Qwen2-7B | 16 GB |\n| Llama3-8B | 18 GB |\n| Gemma-2B | 6 GB |\n"
    )
    assert texts(doc, chunk_markdown(doc, size=20, overlap=0)) == [
        ("## 表格", ("表格",)),
        ("| 模型 | 显存 |\n|---|---|\n| Qwen2-7B | 16 GB |\n| Llama3-8B | 18 GB |", ("表格",)),
        ("| Gemma-2B | 6 GB |", ("表格",)),
    ]
    [whole] = chunk_markdown(doc, size=40, overlap=0)
    assert doc[whole.start : whole.end] == doc.strip()


SENTENCES = "第一句话很短。第二句话也短！第三句是问题吗？第四句用分号；第五句结束。"


def test_chinese_sentence_splitting() -> None:
    assert [t for t, _ in texts(SENTENCES, chunk_plain(SENTENCES, size=8, overlap=0))] == [
        "第一句话很短。",
        "第二句话也短！",
        "第三句是问题吗？",
        "第四句用分号；",
        "第五句结束。",
    ]
    # sentences are 6, 6, 7, 6 and 5 units: packed greedily up to 13
    assert [t for t, _ in texts(SENTENCES, chunk_markdown(SENTENCES, size=13, overlap=0))] == [
        "第一句话很短。第二句话也短！",
        "第三句是问题吗？第四句用分号；",
        "第五句结束。",
    ]


def test_latin_sentences_split_only_before_whitespace() -> None:
    doc = "Version 3.14 is out. Use Qwen2-7B! Really? Yes."
    # Version 3.14 is out . | Use Qwen2-7B ! | Really ? | Yes .
    assert [doc[c.start : c.end] for c in chunk_plain(doc, size=5, overlap=0)] == [
        "Version 3.14 is out.",
        "Use Qwen2-7B! Really?",
        "Yes.",
    ]


def test_long_sentence_splits_at_commas_then_every_size_units() -> None:
    doc = "这是一个很长的句子，包含逗号、顿号, 以及英文 comma 然后继续"
    assert [doc[c.start : c.end] for c in chunk_plain(doc, size=6, overlap=0)] == [
        "这是一个很长",
        "的句子，",
        "包含逗号、",
        "顿号,",
        "以及英文 comma 然",
        "后继续",
    ]
    words = "没有任何标点的中文长句子 with English words inside 和更多中文字符"
    assert [words[c.start : c.end] for c in chunk_plain(words, size=5, overlap=0)] == [
        "没有任何标",
        "点的中文长",
        "句子 with English words",  # never inside a Latin word
        "inside 和更多中",
        "文字符",
    ]


OVERLAP = "甲一。乙二二。丙三三三。丁四四四四。戊五五五五五。"


def test_overlap_starts_at_a_sentence_in_the_previous_tail() -> None:
    assert texts(OVERLAP, chunk_plain(OVERLAP, size=9, overlap=4)) == [
        ("甲一。乙二二。丙三三三。", ()),
        ("丙三三三。丁四四四四。", ()),  # 丙三三三 = 4 units repeated
        ("戊五五五五五。", ()),  # 丁四四四四 = 5 units > overlap: no overlap
    ]
    assert texts(OVERLAP, chunk_plain(OVERLAP, size=9, overlap=0)) == [
        ("甲一。乙二二。丙三三三。", ()),
        ("丁四四四四。", ()),
        ("戊五五五五五。", ()),
    ]


def test_no_overlap_across_headings() -> None:
    doc = "# 一\n\n甲一。乙二二。丙三三三。\n\n# 二\n\n丁四四四四。\n"
    assert texts(doc, chunk_markdown(doc, size=8, overlap=4)) == [
        ("# 一\n\n甲一。乙二二。", ("一",)),
        ("乙二二。丙三三三。", ("一",)),
        ("# 二\n\n丁四四四四。", ("二",)),
    ]


def test_overlap_skips_code_lines_before_another_block() -> None:
    doc = "```\nrun a\nrun b\nrun c\n```\n\n后面的段落。"
    chunks = chunk_markdown(doc, size=7, overlap=3)
    assert texts(doc, chunks) == [
        ("```\nrun a\nrun b\nrun c", ()),
        ("run c\n```", ()),  # continues the same block: shares a line
        ("后面的段落。", ()),  # another block: the closing fence line is no overlap for it
    ]


def test_hard_breaks_end_chunks_and_keep_the_heading_path() -> None:
    doc = "# 第一章\n\n第一页的内容。\n\n第二页继续。同一段落。\n\n## 小节\n\n第三页。\n"
    breaks = [doc.index("第二页"), doc.index("同一段落")]
    chunks = chunk_markdown(doc, size=50, overlap=10, hard_breaks=breaks)
    assert [(c.start, c.end) for c in chunks] == [(0, 14), (16, 22), (22, 27), (29, 40)]
    assert texts(doc, chunks) == [
        ("# 第一章\n\n第一页的内容。", ("第一章",)),
        ("第二页继续。", ("第一章",)),
        ("同一段落。", ("第一章",)),
        ("## 小节\n\n第三页。", ("第一章", "小节")),
    ]


def test_body_less_heading_does_not_attach_across_a_hard_break() -> None:
    doc = "# 章\n## 节\n正文。"
    assert texts(doc, chunk_markdown(doc, size=50, overlap=0)) == [(doc, ("章", "节"))]
    chunks = chunk_markdown(doc, size=50, overlap=0, hard_breaks=[doc.index("## 节")])
    assert texts(doc, chunks) == [("# 章", ("章",)), ("## 节\n正文。", ("章", "节"))]


def test_front_matter_is_its_own_chunk_and_setext_headings() -> None:
    doc = (
        "---\ntitle: 笔记\ntags: [docker, gpu]\n---\n\n前言。\n\n"
        "安装指南\n========\n\n正文一。\n\n细节 *说明*\n--------\n\n正文二。\n"
    )
    assert texts(doc, chunk_markdown(doc, size=50, overlap=0)) == [
        ("---\ntitle: 笔记\ntags: [docker, gpu]\n---", ()),
        ("前言。", ()),
        ("安装指南\n========\n\n正文一。", ("安装指南",)),
        ("细节 *说明*\n--------\n\n正文二。", ("安装指南", "细节 说明")),
    ]


def test_crlf_offsets() -> None:
    doc = "# 标题\r\n\r\n第一句。第二句！\r\n\r\n## 子标题\r\n内容。\r\n"
    assert texts(doc, chunk_markdown(doc, size=50, overlap=0)) == [
        ("# 标题\r\n\r\n第一句。第二句！", ("标题",)),
        ("## 子标题\r\n内容。", ("标题", "子标题")),
    ]


def test_hash_without_space_and_html_are_not_headings() -> None:
    doc = "#标题没有空格\n\n<div>\n# 不是标题\n</div>\n\n正文。\n"
    assert texts(doc, chunk_markdown(doc, size=50, overlap=0)) == [(doc.strip(), ())]


def test_plain_text_packs_paragraphs() -> None:
    doc = "第一段。\n\n第二段，稍长一点。\n\n\n# 不是标题\n第三段。"
    assert texts(doc, chunk_plain(doc, size=10, overlap=0)) == [
        ("第一段。\n\n第二段，稍长一点。", ()),
        ("# 不是标题\n第三段。", ()),
    ]


@pytest.mark.parametrize("chunker", [chunk_markdown, chunk_plain])
def test_empty_and_blank_documents(chunker: Chunker) -> None:
    assert chunker("", size=10, overlap=0) == []
    assert chunker(" \n\n\t\u3000", size=10, overlap=0) == []
    assert chunker("x", size=10, overlap=0, hard_breaks=[-5, 0, 1, 1, 99]) == [ChunkSpan(0, 1, ())]


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (-1, 0), (10, 10), (10, -1)])
def test_bad_sizes_raise_config_error(size: int, overlap: int) -> None:
    with pytest.raises(ConfigError):
        chunk_markdown("text", size=size, overlap=overlap)
    with pytest.raises(ConfigError):
        chunk_plain("text", size=size, overlap=overlap)


# --- invariants on random documents ---------------------------------------------------------------------

PIECES = [
    "# 标题\n", "#标题\n", "## Sub **b** `c_d`\n", "Setext\n===\n", "para\n---\n", "```py\nx = 1\n# c\n",
    "```\n", "~~~\n", "| a | b |\n|---|---|\n| 1 | 2 |\n", "- item 一。\n", "> quote！\n",
    "<div>\n<p>html</p>\n</div>\n", "\n", "\n\n", "   ", "这是一句话。", "第二句！", "Hello world. ",
    "Qwen2-7B is fast? ", "逗号，顿号、", "x" * 150, "很长的没有标点的中文句子" * 8, "---\n", "title: x\n",
    "[ref]: http://x.y\n", "\t", "\r\n", "\r", "…", "。。。", "a,b,c,", "\u3000", "    indented code\n",
]  # fmt: skip


def check_invariants(
    doc: str, chunks: list[ChunkSpan], size: int, overlap: int, breaks: Sequence[int]
) -> None:
    covered = bytearray(len(doc))
    for i, c in enumerate(chunks):
        body = doc[c.start : c.end]
        assert 0 <= c.start < c.end <= len(doc)
        assert body == body.strip()
        assert measure(body) <= size
        assert not any(c.start < b < c.end for b in breaks)
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
        if i:
            prev = chunks[i - 1]
            assert prev.start < c.start and prev.end < c.end  # document order, always progress
            if c.start < prev.end:  # overlap: small, same section
                assert overlap > 0
                assert measure(doc[c.start : prev.end]) <= overlap
                assert c.heading_path == prev.heading_path
    missed = [i for i, ch in enumerate(doc) if not ch.isspace() and not covered[i]]
    assert not missed


@pytest.mark.parametrize("chunker", [chunk_markdown, chunk_plain])
def test_invariants_on_random_documents(chunker: Chunker) -> None:
    rnd = random.Random(20240601)
    for _ in range(250):
        doc = "".join(rnd.choice(PIECES) for _ in range(rnd.randint(1, 40)))
        size = rnd.randint(1, 60)
        overlap = rnd.randint(0, size - 1) if rnd.random() < 0.6 else 0
        breaks = sorted(rnd.sample(range(len(doc) + 1), min(3, len(doc)))) if rnd.random() < 0.5 else []
        chunks = chunker(doc, size=size, overlap=overlap, hard_breaks=breaks)
        check_invariants(doc, chunks, size, overlap, breaks)


# --- running time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        "." * 50_000 + "x",  # sentence-end regex must not rescan the run at every position
        "!?" * 25_000,
        ".)" * 25_000 + "x",
        ("y" * 64 + " ") * 1_000,
        "# " + "[`<a" * 20_000,  # heading text cleanup on a huge heading
        "[" * 50_000 + "\n===\n",  # a paragraph-sized setext heading
        "很长的没有标点的中文句子" * 5_000,
        "```\n" + "x = 1\n" * 10_000,
    ],
    ids=["dots", "bangs", "closers", "long-words", "huge-heading", "huge-setext", "no-punct", "open-fence"],
)
def test_pathological_inputs_stay_linear(doc: str) -> None:
    started = time.process_time()
    for chunker in (chunk_markdown, chunk_plain):
        check_invariants(doc, chunker(doc, size=100, overlap=10), 100, 10, ())
    assert time.process_time() - started < 5


def generated_notes(n_chars: int, seed: int = 0) -> str:
    rnd = random.Random(seed)
    zh = "这是一个关于容器和模型部署的笔记我们使用显卡启动服务然后检查日志输出是否正常"
    words = ["docker", "run", "--gpus", "all", "ollama", "Qwen2-7B", "snake_case", "3.14", "the", "model"]

    def sentence() -> str:
        parts = [
            "".join(rnd.choice(zh) for _ in range(rnd.randint(2, 8)))
            if rnd.random() < 0.6
            else f" {rnd.choice(words)} "
            for _ in range(rnd.randint(3, 12))
        ]
        return "".join(parts) + rnd.choice("。！？；.，")

    out: list[str] = []
    total = 0
    while total < n_chars:
        r = rnd.random()
        if r < 0.1:
            block = "#" * rnd.randint(1, 4) + f" 标题 {total} **粗体**\n\n"
        elif r < 0.2:
            block = (
                "```bash\n"
                + "".join(f"docker run img:{i}  # c\n" for i in range(rnd.randint(1, 30)))
                + "```\n\n"
            )
        elif r < 0.25:
            block = "| a | b |\n|---|---|\n" + "".join(f"| {sentence()} | {i} |\n" for i in range(9)) + "\n"
        elif r < 0.32:
            block = "".join(f"- {sentence()}\n" for _ in range(rnd.randint(1, 8))) + "\n"
        else:
            block = "".join(sentence() for _ in range(rnd.randint(1, 15))) + "\n\n"
        out.append(block)
        total += len(block)
    return "".join(out)


@pytest.mark.slow
def test_five_megabyte_markdown_in_a_few_seconds() -> None:
    doc = generated_notes(2_800_000)  # mostly Chinese: about 5.2 MB of UTF-8
    assert len(doc.encode()) > 5_000_000
    started = time.process_time()
    chunks = chunk_markdown(doc, size=256, overlap=32)
    elapsed = time.process_time() - started
    check_invariants(doc, chunks, 256, 32, ())
    assert elapsed < 6, f"{elapsed:.1f} s CPU"  # measured ~1.2 s on a 2-core development machine
