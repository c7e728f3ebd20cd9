from __future__ import annotations

from pathlib import Path

from ingest.walk import walk
from rag.settings import IngestSettings


def _sources(root: Path, **kw: object) -> list[str]:
    return [f.source for f in walk(root, IngestSettings(**kw))]  # type: ignore[arg-type]


def test_walk_finds_supported_files_and_skips_hidden(notes_dir: Path) -> None:
    assert _sources(notes_dir) == ["docker/gpu.md", "todo.txt"]


def test_walk_exclude_folder_and_file_globs(notes_dir: Path) -> None:
    assert _sources(notes_dir, exclude=["docker/**"]) == ["todo.txt"]
    assert _sources(notes_dir, exclude=["docker"]) == ["todo.txt"]
    assert _sources(notes_dir, exclude=["*.txt"]) == ["docker/gpu.md"]


def test_walk_include_is_case_insensitive(tmp_path: Path) -> None:
    (tmp_path / "README.MD").write_text("# x\n")
    (tmp_path / "a.md").write_text("# y\n")
    assert _sources(tmp_path) == ["README.MD", "a.md"]
    assert _sources(tmp_path, include=["a.*"]) == ["a.md"]


def test_walk_hidden_can_be_included(notes_dir: Path) -> None:
    assert ".git/notes.md" in _sources(notes_dir, skip_hidden=False)
