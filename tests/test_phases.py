"""`rag ingest` reports where its wall time went: phases that sum to ``took_s``, the command's wall time."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from ingest.publish import ingest_and_publish
from rag.engine import Engine
from rag.settings import Settings
from tests.hashing_embedder import HashingEmbedder

PIPELINE_PHASES = {"scan", "read", "chunk", "store"}


class SlowEmbedder(HashingEmbedder):
    """Takes a fixed time per passage, like a model on a small CPU."""

    def __init__(self, per_text_s: float) -> None:
        super().__init__(64, name="slow-hashing-64")
        self.per_text_s = per_text_s

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(self.per_text_s * len(texts))
        return super().embed_passages(texts)


def _notes(root: Path, n: int = 12) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        body = "\n\n".join(f"## 节 {j}\n\n" + f"docker ollama 端口 {i}-{j} 检索 向量 " * 30 for j in range(3))
        (root / f"n{i:02d}.md").write_text(f"# 笔记 {i}\n\n{body}\n", encoding="utf-8")
    return root


def test_cli_ingest_json_phases_sum_to_the_wall_time(tmp_path: Path) -> None:
    notes = _notes(tmp_path / "notes")
    t0 = time.perf_counter()
    res = CliRunner().invoke(cli, ["ingest", str(notes), "--data-dir", str(tmp_path / "d"), "--json"])
    wall = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    phases = out["phases"]
    assert {"start", "bmx", "graph"} | PIPELINE_PHASES <= set(phases)
    assert all(seconds >= 0 for seconds in phases.values())
    assert out["took_s"] <= wall + 0.01
    assert out["took_s"] >= 0.8 * wall - 0.05  # the command's wall time, not a part of it
    assert sum(phases.values()) == pytest.approx(out["took_s"], rel=0.05, abs=0.05)


def test_cli_human_output_lists_the_phases(tmp_path: Path) -> None:
    notes = _notes(tmp_path / "notes", n=2)
    res = CliRunner().invoke(cli, ["ingest", str(notes), "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "phases" in res.output and "bmx" in res.output and "store" in res.output


def test_dense_phases_are_timed_and_reported_in_order(tmp_path: Path) -> None:
    notes = _notes(tmp_path / "notes")
    settings = Settings(data_dir=tmp_path / "d")
    settings.embedding.model = "slow-hashing"
    settings.graph.enabled = False
    per_text = 0.01
    seen: list[str] = []
    with Engine.open(settings, create=True, embedder=SlowEmbedder(per_text)) as engine:
        t0 = time.perf_counter()
        outcome = ingest_and_publish(
            [notes], settings, engine, engine.store, publish_progress=lambda d, t, item: seen.append(item)
        )
        wall = time.perf_counter() - t0
    report = outcome.report
    phases = report.phases
    assert PIPELINE_PHASES | {"bmx", "embed", "vectors"} <= set(phases)
    assert "graph" not in phases
    assert phases["embed"] >= per_text * report.chunks * 0.9  # the model's time is in "embed"
    assert report.took_s == pytest.approx(wall, abs=0.05)
    assert sum(phases.values()) == pytest.approx(report.took_s, rel=0.05, abs=0.05)
    # progress names each phase, the BMX index before any embedding (search first)
    assert seen[0] == "bmx" and "embed" in seen and "vectors" in seen
    assert max(i for i, item in enumerate(seen) if item == "bmx") < seen.index("embed")
    assert outcome.as_dict()["phases"].keys() == phases.keys()
