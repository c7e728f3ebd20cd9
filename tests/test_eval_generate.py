"""eval.generate: known-item collections from an ingested folder, and `rag eval --generate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from eval.beir import load_beir
from eval.generate import (
    build_corpus,
    candidate_sentences,
    clean_sentence,
    generate_collection,
    select_queries,
)
from rag.errors import InputError
from rag.models import Chunk
from rag.settings import Settings
from rag.store import ChunkStore

FAST = {"RAG_EMBEDDING__MODEL": "none", "RAG_LLM__BACKEND": "none", "RAG_DATA_DIR": None}

NOTES = {
    "docker.md": """# Docker

## GPU

Ollama runs inside a container when the NVIDIA runtime is installed on the host machine.
Pass the gpus flag so that the container sees every graphics card of the server.
The default port of the service is eleven thousand four hundred thirty four.
Logs of the container show whether the model was loaded on the graphics card or on the processor.
Older drivers refuse to start the container and print a version mismatch error instead.

## Volumes

Named volumes keep downloaded model weights between container restarts and upgrades.
Removing the volume deletes every model, so the next start downloads them all again.
Bind mounts work as well when the weights should live in a folder of the host.
```bash
docker run --gpus all -v ollama:/root/.ollama ollama/ollama
```
""",
    "python.md": """# Python

Virtual environments isolate the packages of one project from every other project.
Create the environment with the venv module and activate it before installing anything.
Pinned requirement files make installations repeatable across different developer laptops.
Editable installs let the interpreter import the working tree without copying any files.
Upgrading the package installer first avoids many confusing build errors with wheels.
""",
    "缓存.md": """# 缓存

Redis 是一个常用的内存数据库，很多团队把它当作缓存层来减少数据库的压力。
缓存失效的时候，大量请求会同时打到后端数据库，这种现象通常被称为缓存雪崩。
给过期时间加上随机偏移可以让键不会在同一时刻全部失效。
热点数据可以在应用进程里再放一层本地缓存，进一步降低网络往返的开销。
写操作之后先更新数据库再删除缓存，是比较常见也比较稳妥的一致性做法。
""",
    "git.md": """# Git

Rebasing rewrites the commit history of a branch on top of another starting point.
Merging keeps the original history and records a separate merge commit instead.
Never rebase commits that other people have already pulled from the shared remote.
Interactive rebasing can squash a series of small fixup commits into a single one.
The reflog remembers where every branch pointed, so a bad rebase can be undone.
""",
}


def ingest(tmp_path: Path, *, size: int = 350, overlap: int = 50) -> Settings:
    from ingest.pipeline import sync_paths
    from rag.engine import Engine

    root = tmp_path / "notes"
    root.mkdir()
    for name, text in NOTES.items():
        (root / name).write_text(text, encoding="utf-8")
    settings = Settings(
        data_dir=tmp_path / "index",
        embedding={"model": "none"},  # type: ignore[arg-type]
        chunking={"size": size, "overlap": overlap},  # type: ignore[arg-type]
    )
    with Engine.open(settings, create=True) as engine:
        sync_paths([root], settings, engine.store)
        engine.sync()
    return settings


def _chunk(
    cid: str, text: str, source: str = "a.md", ordinal: int = 0, heading: tuple[str, ...] = ()
) -> Chunk:
    return Chunk(cid, "doc-" + source, source, ordinal, text, 0, len(text), None, heading)


# -- pure parts ------------------------------------------------------------------------------------


def test_candidate_sentences_skip_markup_and_code() -> None:
    text = (
        "# A heading that is long enough to be a sentence\n"
        "- The first list item explains how the tool starts up. A second sentence here is also fine for a query!\n"
        "```\nthis code line should never become a query sentence.\n```\n"
        "| a table row | with cells | that are long enough |\n"
        "See https://example.com for the details of this long enough sentence.\n"
        "用 docker 启动 ollama 容器并且把端口映射到宿主机上。短句。\n"
    )
    got = [(text[s:e], q) for s, e, q in candidate_sentences(text)]
    assert got == [
        (
            "The first list item explains how the tool starts up.",
            "The first list item explains how the tool starts up",
        ),
        (
            "A second sentence here is also fine for a query!",
            "A second sentence here is also fine for a query",
        ),
        (
            "用 docker 启动 ollama 容器并且把端口映射到宿主机上。",
            "用 docker 启动 ollama 容器并且把端口映射到宿主机上",
        ),
    ]


def test_clean_sentence() -> None:
    assert (
        clean_sentence("Use **`docker run`** with [the flag](http://x.y)  now.")
        == "Use docker run with the flag now"
    )
    assert clean_sentence("端口是多少？") == "端口是多少"


def test_overlapping_sentences_are_never_queries() -> None:
    shared = "This shared sentence sits in the overlap of both chunks here."
    a = _chunk("c1", "Only the first chunk mentions apples and their orchard. " + shared, ordinal=0)
    b = _chunk("c2", shared + " Only the second chunk mentions pears and their trees.", ordinal=1)
    filler = _chunk("c3", "Bananas grow in warm climates with plenty of rain and sun.", source="b.md")
    picked = select_queries([a, b, filler], n_queries=10, min_context_units=5, tokenize=str.split)
    texts = {q.text for q in picked}
    assert shared.rstrip(".") not in texts
    assert texts <= {
        "Only the first chunk mentions apples and their orchard",
        "Only the second chunk mentions pears and their trees",
        "Bananas grow in warm climates with plenty of rain and sun",
    }
    assert len({q.chunk_id for q in picked}) == len(picked)  # a chunk gives at most one query
    # the Bananas chunk would be empty without its only sentence: not usable
    assert "c3" not in {q.chunk_id for q in picked}


def test_build_corpus_cuts_the_sentence_out() -> None:
    # the other chunk repeats the words of the first and last sentences: the middle one is the most salient
    c = _chunk(
        "c1", "Keep this part here. The middle sentence goes away. Keep the end too.", heading=("H", "Sub")
    )
    other = _chunk("c2", "Keep this part here and Keep the end too, with more words around.", source="b.md")
    q = select_queries([c, other], n_queries=1, min_units=3, min_context_units=3, tokenize=str.split, seed=0)
    assert [(x.chunk_id, x.text) for x in q] == [("c1", "The middle sentence goes away")]
    rows = build_corpus([other, c], q)
    assert [r["_id"] for r in rows] == ["c1", "c2"]  # sorted by source
    assert rows[0] == {
        "_id": "c1",
        "title": "H > Sub",
        "text": "Keep this part here. Keep the end too.",
        "heading": "H > Sub",
        "context": "",
        "source": "a.md",
        "page": None,
        "ordinal": 0,
    }
    assert rows[1]["text"] == other.text
    # a Chinese sentence between Chinese ones leaves no space behind
    zh = _chunk("z", "第一句话在这里说明背景。要删除的句子在中间位置。最后一句话留下来作为上下文。")
    (zq,) = select_queries([zh], n_queries=1, min_units=3, min_context_units=3, tokenize=list)
    (zrow,) = build_corpus([zh], [zq])
    assert zrow["text"] == zh.text[: zq.start] + zh.text[zq.end :]


def test_select_queries_is_deterministic_and_seeded() -> None:
    chunks = [
        _chunk(
            f"{doc}-{i}",
            f"Context words for doc {doc} part {i}. Sentence number {i} about topic {doc} details.",
            source=f"{doc}.md",
            ordinal=i,
        )
        for doc in "abcdefgh"
        for i in range(3)
    ]
    one = select_queries(chunks, n_queries=5, seed=1, min_units=3, min_context_units=3, tokenize=str.split)
    again = select_queries(
        list(reversed(chunks)), n_queries=5, seed=1, min_units=3, min_context_units=3, tokenize=str.split
    )
    other = select_queries(chunks, n_queries=5, seed=2, min_units=3, min_context_units=3, tokenize=str.split)
    assert one == again
    assert [q.qid for q in one] == [f"gen-{i:05d}" for i in range(1, 6)]
    assert len({q.chunk_id.split("-")[0] for q in one}) == 5  # round-robin: five different documents
    assert [q.chunk_id for q in one] != [q.chunk_id for q in other]


def test_select_queries_rejects_zero() -> None:
    with pytest.raises(InputError):
        select_queries([], n_queries=0)


# -- from an ingested folder -----------------------------------------------------------------------


def test_generate_round_trip(tmp_path: Path) -> None:
    settings = ingest(tmp_path, size=60, overlap=15)  # several overlapping chunks per note
    out = tmp_path / "gen"
    with ChunkStore(settings.data_dir, create=False) as store:
        meta = generate_collection(store, out, n_queries=6, seed=0)
        chunks = {c.chunk_id: c for batch in store.iter_chunks() for c in batch}
    assert meta["generator"] == "rag eval --generate" and meta["n_queries"] == 6
    assert meta["n_corpus"] == len(chunks) and meta["n_documents"] == 4
    assert meta["n_documents_with_queries"] == 4  # round-robin reaches every note
    ds = load_beir(out)
    assert set(ds.corpus) == set(chunks)  # corpus ids are chunk ids, one entry per chunk
    assert len(ds.queries) == 6
    for qid, text in ds.queries.items():
        ((cid, grade),) = ds.qrels[qid].items()
        assert grade == 1
        source = chunks[cid].text
        norm_source = " ".join(source.split())
        assert text in norm_source  # the query came from its relevant chunk ...
        assert text not in " ".join(ds.corpus[cid]["text"].split())  # ... and was removed from it
        for other, entry in ds.corpus.items():
            assert text not in " ".join(entry["text"].split()), (qid, other)  # nowhere to copy from
        # the title is what the indexes see before the text: heading path, then context
        assert ds.corpus[cid]["title"] == chunks[cid].index_text()[: -len(chunks[cid].text)].rstrip("\n")

    # `rag eval` works on it
    res = CliRunner().invoke(cli, ["eval", str(out), "--json", "--modes", "sparse"], env=FAST)
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["n_queries"] == 6 and result["n_corpus"] == len(chunks)
    assert result["modes"]["sparse"]["recall@100"] > 0


def test_generate_cli_is_deterministic(tmp_path: Path) -> None:
    settings = ingest(tmp_path)
    runner = CliRunner()
    outs = []
    for name, seed in (("a", "7"), ("b", "7")):
        out = tmp_path / name
        args = ["eval", "--generate", str(out), "--n-queries", "3", "--seed", seed, "--json"]
        res = runner.invoke(cli, args, env={**FAST, "RAG_DATA_DIR": str(settings.data_dir)})
        assert res.exit_code == 0, res.stderr
        assert json.loads(res.stdout)["n_queries"] == 3
        outs.append(out)
    for rel in ("queries.jsonl", "qrels/test.tsv", "corpus.jsonl"):
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    # regenerating into a folder it made before is allowed
    res = runner.invoke(
        cli, ["eval", "--generate", str(outs[0]), "--data-dir", str(settings.data_dir)], env=FAST
    )
    assert res.exit_code == 0 and "next: rag eval" in res.stdout


def test_generate_refuses_foreign_folders_and_empty_indexes(tmp_path: Path) -> None:
    settings = ingest(tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.md").write_text("mine", encoding="utf-8")
    with ChunkStore(settings.data_dir, create=False) as store, pytest.raises(InputError, match="not empty"):
        generate_collection(store, busy)
    assert sorted(p.name for p in busy.iterdir()) == ["thesis.md"]
    with ChunkStore(tmp_path / "empty") as store, pytest.raises(InputError, match="no chunks"):
        generate_collection(store, tmp_path / "x")
    res = CliRunner().invoke(
        cli, ["eval", "--generate", str(tmp_path / "y"), "--data-dir", str(tmp_path / "none")], env=FAST
    )
    assert res.exit_code == 3 and "rag ingest" in res.stderr  # no index there
    res = CliRunner().invoke(cli, ["eval", str(busy), "--generate", str(tmp_path / "z")], env=FAST)
    assert res.exit_code == 2 and "not both" in res.stderr


def test_question_writer_hook(tmp_path: Path) -> None:
    settings = ingest(tmp_path)
    asked: list[str] = []

    def write(chunk: Chunk) -> str | None:
        asked.append(chunk.chunk_id)
        return None if len(asked) == 1 else f"What does the note {chunk.source} say?"

    with ChunkStore(settings.data_dir, create=False) as store:
        meta = generate_collection(
            store, tmp_path / "q", n_queries=3, question_fn=write, question_model="fake"
        )
    ds = load_beir(tmp_path / "q")
    assert meta["questions_written"] == 2 and meta["question_model"] == "fake"
    written = [t for t in ds.queries.values() if t.startswith("What does the note")]
    assert len(written) == 2 and len(asked) == 3
    # a written question leaves its chunk whole; the sentence query (first) was cut out of its chunk
    first = ds.queries["gen-00001"]
    (cid,) = ds.qrels["gen-00001"]
    assert first not in ds.corpus[cid]["text"]
