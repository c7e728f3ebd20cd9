"""eval.report: markdown table, JSON and PNG chart from an evaluate() result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eval.report import markdown_report, plot_chart, write_report
from rag.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(ndcg: float, r100: float, p50: float, **extra: float) -> dict[str, float]:
    return {
        "ndcg@10": ndcg,
        "recall@10": ndcg + 0.05,
        "recall@100": r100,
        "mrr@10": ndcg - 0.05,
        "latency_ms_p50": p50,
        "latency_ms_p95": p50 * 2,
        **extra,
    }


def result(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "dataset": "toy",
        "n_queries": 12,
        "n_corpus": 40,
        "index_s": 3.25,
        "modes": {
            "sparse": _row(0.61, 0.9, 1.5),
            "dense": _row(0.41, 0.8, 20.0),
            "hybrid": _row(0.66, 0.95, 22.0),
        },
        "generation": None,
        "config": {"settings": {"embedding": {"model": "minilm"}}},
        "timings": {"sync_s": {"sparse": 0.5, "dense": 2.5}, "search_s": {"sparse": 0.1}, "total_s": 4.0},
        "machine": {"platform": "Linux", "cpu_count": 2, "python": "3.11.7"},
    }
    base.update(over)
    return base


def test_markdown_table_per_mode() -> None:
    md = markdown_report(result())
    lines = md.splitlines()
    assert lines[0] == "# Retrieval benchmark: toy"
    assert "12 queries, 40 corpus entries; indexing took 3.2 s; embedding model `minilm`." in md
    header = "| mode | nDCG@10 | Recall@10 | Recall@100 | MRR@10 | p50 ms | p95 ms |"
    assert header in lines
    assert "| sparse | 0.6100 | 0.6600 | 0.9000 | 0.5600 | 1.5 | 3.0 |" in lines
    assert "| hybrid | 0.6600 | 0.7100 | 0.9500 | 0.6100 | 22.0 | 44.0 |" in lines
    assert "- index build per leg: sparse 0.5 s, dense 2.5 s" in lines
    assert "## Queries in" not in md and "## Generated answers" not in md


def test_markdown_slices_answers_and_generation() -> None:
    modes = {"sparse": _row(0.5, 0.9, 1.0, **{"answer_recall@1": 0.25, "answer_recall@10": 0.75})}
    slices = {
        "zh": {"sparse": {**_row(0.6, 1.0, 1.0), "n_queries": 7}},
        "en": {"sparse": {**_row(0.4, 0.8, 1.0), "n_queries": 5}},
    }
    gen = {
        "mode": "hybrid",
        "llm": {"backend": "ollama", "model": "qwen"},
        "n_queries": 3,
        "exact_match": 0.3333,
        "f1": 0.5,
        "citation_accuracy": None,
        "latency_ms_p50": 100.0,
        "latency_ms_p95": 200.0,
    }
    md = markdown_report(result(modes=modes, slices=slices, generation=gen))
    lines = md.splitlines()
    # answer recall columns sorted by k
    assert (
        "| mode | nDCG@10 | Recall@10 | Recall@100 | MRR@10 | AnsRecall@1 | AnsRecall@10 | p50 ms | p95 ms |"
        in lines
    )
    assert lines.index("## Queries in zh") < lines.index("## Queries in en")
    assert "| sparse | 7 | 0.6000 | 0.6500 | 1.0000 | 0.5500 | 1.0 | 2.0 |" in lines
    assert "| 0.3333 | 0.5000 | – | 100.0 | 200.0 |" in lines
    assert "3 queries answered by `qwen` (ollama), hybrid retrieval." in md


def test_write_report_files(tmp_path: Path) -> None:
    res = result(slices={"zh": {"sparse": _row(0.7, 1.0, 1.0)}, "en": {"sparse": _row(0.3, 0.5, 1.0)}})
    paths = write_report(res, tmp_path / "out" / "nested")
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == res
    assert paths["markdown"].read_text(encoding="utf-8") == markdown_report(res)
    png = paths["chart"].read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5000
    assert sorted(p.name for p in (tmp_path / "out" / "nested").iterdir()) == [
        "results.json",
        "results.md",
        "results.png",
    ]


def test_chart_with_a_name_the_font_cannot_draw(tmp_path: Path) -> None:
    # warnings are errors in the test run: a missing glyph must not become one
    out = plot_chart(result(dataset="我的笔记"), tmp_path / "c.png")
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_write_report_without_chart_and_without_modes(tmp_path: Path) -> None:
    paths = write_report(result(), tmp_path, chart=False)
    assert "chart" not in paths and not (tmp_path / "results.png").exists()
    with pytest.raises(InputError):
        write_report(result(modes={}), tmp_path)


def test_matplotlib_is_not_imported_with_the_module() -> None:
    code = "import sys, eval.report, eval.runner, cli.eval_cmd; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
