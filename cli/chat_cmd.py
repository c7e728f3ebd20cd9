"""`rag chat`: a conversation in the terminal; follow-up questions use the earlier turns."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from cli.common import answer_k_option, common_options, emit_json
from rag.settings import Settings

EXIT_WORDS = {"/exit", "/quit", "exit", "quit", ":q"}
RESET_WORDS = {"/reset", "/new"}


@click.command("chat")
@click.option("--no-llm", is_flag=True, help="Do not call a model: cited sentences, follow-ups by key terms.")
@answer_k_option
@common_options
def chat_cmd(no_llm: bool, k: int | None, settings: Settings, as_json: bool) -> None:
    """Talk with your documents: ask, then ask follow-ups ("它默认监听哪个端口？").

    \b
    Each question is answered as `rag ask` does, after a follow-up is rewritten
    into a standalone question from the conversation: by a short call to the
    model, or without one (--no-llm, backend none) by carrying the earlier
    questions' key terms. The rewritten question is shown above the answer
    (`→ ...`). /reset starts a new conversation; /exit, or end of input, ends.
    While `rag serve` owns the data dir, each turn goes through it.

    \b
    With --json, questions are read one per line from stdin and each answer is
    printed as one JSON line: the `rag ask --json` object plus `rewrite`
    ({question, standalone, method, note}). A question that fails prints one
    error line on stderr; the others are still answered, and the exit code is 1.

    \b
    Examples:
      rag chat
      printf 'Ollama 是什么？\\n它默认监听哪个端口？\\n' | rag chat --json --no-llm | jq -r .rewrite.standalone
    """
    from cli.remote import owner_client

    client = owner_client(settings, "read", doing="chat")
    if client is not None:  # a server owns the data dir: every turn goes through it
        with client:
            _loop(lambda q, h: _remote_turn(client, q, h, k, no_llm), as_json)
        return

    from rag.engine import Engine
    from rag.llm import make_llm

    llm = None if no_llm else make_llm(settings.llm)
    try:
        with Engine.open(settings) as engine:
            _loop(lambda q, h: _local_turn(engine, llm, q, h, k), as_json)
    finally:
        if llm is not None:
            llm.close()


Turn = Callable[[str, list[dict[str, str]]], Iterator[tuple[str, Any]]]


def _local_turn(
    engine: Any, llm: Any, question: str, history: list[Any], k: int | None
) -> Iterator[tuple[str, Any]]:
    """One turn answered here: ``("rewrite", dict)``, ``("token", text)``..., ``("final", dict)``."""
    from rag.answer import FinalEvent, TokenEvent
    from rag.conversation import RewriteEvent, conversation_stream

    for event in conversation_stream(engine, llm, question, history, k=k):
        if isinstance(event, RewriteEvent):
            yield "rewrite", event.as_dict()
        elif isinstance(event, TokenEvent):
            yield "token", event.text
        elif isinstance(event, FinalEvent):
            yield "final", event.as_dict()


def _remote_turn(
    client: Any, question: str, history: list[dict[str, str]], k: int | None, no_llm: bool
) -> Iterator[tuple[str, Any]]:
    """The same turn asked of the server that owns the data dir (``POST /v1/ask`` with ``history``)."""
    from rag.errors import LLMStreamError

    for event, data in client.ask_stream(question, k, no_llm, history):
        if event == "rewrite":
            yield "rewrite", data
        elif event == "token":
            yield "token", data.get("text", "")
        elif event == "final":
            unchanged = {"question": question, "standalone": question, "method": "none", "note": None}
            data.setdefault("rewrite", unchanged)  # no history: the server answers as /v1/ask does
            yield "final", data
        elif event == "error":
            err = data.get("error", {})
            raise LLMStreamError(str(err.get("message", "the answer failed")), hint=err.get("hint"))


def _loop(turn: Turn, as_json: bool) -> None:
    """Read questions from stdin until the end, /exit or EOF; answer each as the next turn."""
    from cli.ask import _print_sources
    from rag.errors import RagError

    history: list[dict[str, str]] = []
    people = not as_json
    failed = False
    if people and sys.stdin.isatty():
        click.echo("Ask about your notes. /reset starts over, /exit or Ctrl-D ends.", err=True)
    while True:
        if people:
            click.echo("› ", nl=False, err=True)
        line = sys.stdin.readline()
        if not line:
            if people:
                click.echo("", err=True)
            break
        question = line.strip()
        if not question:
            continue
        if question.lower() in EXIT_WORDS:
            break
        if question.lower() in RESET_WORDS:
            history.clear()
            if people:
                click.echo("(new conversation)", err=True)
            continue
        final: dict[str, Any] | None = None
        printed = False
        try:
            for kind, data in turn(question, list(history)):
                if kind == "rewrite" and people:
                    if data.get("standalone") != data.get("question"):
                        click.secho(f"→ {data['standalone']}", dim=True)
                    if data.get("note"):
                        click.secho(f"note: {data['note']}", fg="yellow", err=True)
                elif kind == "token" and people:
                    click.echo(data, nl=False)
                    sys.stdout.flush()
                    printed = True
                elif kind == "final":
                    final = data
            if final is None:
                raise RagError("the answer ended early")
        except RagError as exc:
            if printed:
                click.echo("")
            click.echo(f"error: {exc.one_line()}", err=True)
            failed = True
            continue
        history.append({"role": "user", "content": question})
        history.append({"role": "assistant", "content": str(final.get("answer", ""))})
        if as_json:
            emit_json(final)
            sys.stdout.flush()
        else:
            click.echo("")
            _print_sources(final)
            click.echo("")
    if failed:
        sys.exit(1)
