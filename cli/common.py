"""Pieces shared by every command: common options, JSON output, progress bars."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from rag.settings import load_settings

F = TypeVar("F", bound=Callable[..., Any])


# -k of the commands that answer (ask, chat): how many chunks the model sees
answer_k_option = click.option(
    "-k",
    "k",
    type=click.IntRange(1, 50),
    default=None,
    help="Chunks offered to the model as numbered context [default: RAG_ANSWER__K, 6].",
)


def common_options(fn: F) -> F:
    """--data-dir, --config and --json, on every command."""

    @click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="RAG_DATA_DIR",
        help="Where all index state lives [env RAG_DATA_DIR; default ~/.local/share/rag].",
    )
    @click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="RAG_CONFIG",
        help="TOML settings file [env RAG_CONFIG]. Env vars RAG_* override it.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
    @functools.wraps(fn)
    def wrapper(*args: Any, data_dir: Path | None, config_file: Path | None, as_json: bool, **kw: Any) -> Any:
        settings = load_settings(config_file, data_dir=data_dir)
        return fn(*args, settings=settings, as_json=as_json, **kw)

    return wrapper  # type: ignore[return-value]


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False))


class progress_bar:
    """A rich progress bar on stderr when it is a terminal; a no-op callback otherwise."""

    def __init__(self, *, enabled: bool, label: str) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.label = label
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[int, int, str], None] | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("[dim]{task.fields[item]}", justify="left"),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.__enter__()
        self._task = self._bar.add_task(self.label, total=None, item="")
        return self.update

    def update(self, done: int, total: int, item: str) -> None:
        self._bar.update(self._task, completed=done, total=total, item=item[-60:])

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
