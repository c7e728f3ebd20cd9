"""The CLI through click's runner: JSON contract, one-line errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cli.main import cli

INGEST_KEYS = {"added", "updated", "unchanged", "deleted", "failed", "documents", "chunks", "took_s"}


def test_ingest_json_contract_and_documents(tmp_path: Path, notes_dir: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    res = runner.invoke(cli, ["ingest", str(notes_dir), "--data-dir", str(data), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) >= INGEST_KEYS
    assert out["added"] == 2 and out["failed"] == []
    res = runner.invoke(cli, ["documents", "--json"], env={"RAG_DATA_DIR": str(data)})
    assert res.exit_code == 0, res.output
    assert sorted(d["source"] for d in json.loads(res.stdout)["documents"]) == ["docker/gpu.md", "todo.txt"]


def test_human_output_lists_failures(tmp_path: Path) -> None:
    root = tmp_path / "n"
    root.mkdir()
    (root / "bad.pdf").write_bytes(b"not a pdf at all")
    res = CliRunner().invoke(cli, ["ingest", str(root), "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0
    assert "failed" in res.output and "bad.pdf" in res.output


def test_missing_path_is_one_line_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["ingest", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: path not found")
    assert "Traceback" not in res.output


def test_documents_without_index_says_what_to_do(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["documents", "--data-dir", str(tmp_path / "empty")])
    assert res.exit_code == 3
    assert "rag ingest" in res.stderr


def test_bad_setting_is_a_config_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli, ["documents", "--data-dir", str(tmp_path)], env={"RAG_CHUNKING__SIZE": "not-a-number"}
    )
    assert res.exit_code == 2
    assert res.stderr.startswith("error: invalid setting chunking.size")


def test_config_file(tmp_path: Path, notes_dir: Path) -> None:
    cfg = tmp_path / "rag.toml"
    cfg.write_text('[ingest]\nexclude = ["docker/**"]\n')
    res = CliRunner().invoke(
        cli, ["ingest", str(notes_dir), "--data-dir", str(tmp_path / "d"), "--config", str(cfg), "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == 1


def test_help_teaches_with_examples() -> None:
    res = CliRunner().invoke(cli, ["ingest", "--help"])
    assert res.exit_code == 0
    assert "Examples:" in res.output and "--data-dir" in res.output and "RAG_DATA_DIR" in res.output
