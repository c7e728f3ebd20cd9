"""`rag chat`: a conversation in the terminal; follow-up questions use the earlier turns."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from cli.common import common_options, emit_json
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.answer import Answer
    from rag.conversation import Rewrite

EXIT_WORDS = {"/exit", "/quit", "exit", "quit", ":q"}
RESET_WORDS = {"/reset", "/new"}


@click.command("chat")
@click.option("--no-llm", is_flag=True, help="Do not call a model: cited sentences, follow-ups by key terms.")
@click.option(
    "-k",
    "k",
    type=click.IntRange(1, 50),
    default=None,
    help="Chunks offered to the model as numbered context [default: RAG_ANSWER__K, 6].",
)
@common_options
def chat_cmd(no_llm: bool, k: int | None, settings: Settings, as_json: bool) -> None:
    """Talk with your documents: ask, then ask follow-ups ("它默认监听哪个端口？").

    \b
    Each question is answered as `rag ask` does, after a follow-up is rewritten
    into a standalone question from the conversation: by a short call to the
    model, or without one (--no-llm, backend none) by carrying the earlier
    questions' key terms. The rewritten question is shown above the answer
    (`→ ...`). /reset starts a new conversation; /exit, or end of input, ends.

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
    from rag.answer import TokenEvent
    from rag.conversation import ConversationFinalEvent, RewriteEvent, answer_dict, conversation_stream
    from rag.engine import Engine
    from rag.errors import RagError
    from rag.llm import ChatMessage, make_llm

    llm = None if no_llm else make_llm(settings.llm)
    history: list[ChatMessage] = []
    stdin = sys.stdin
    people = not as_json
    failed = False
    try:
        with Engine.open(settings) as engine:
            if people and stdin.isatty():
                click.echo("Ask about your notes. /reset starts over, /exit or Ctrl-D ends.", err=True)
            while True:
                if people:
                    click.echo("› ", nl=False, err=True)
                line = stdin.readline()
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
                final: Answer | None = None
                rewrite: Rewrite | None = None
                printed = False
                try:
                    for event in conversation_stream(engine, llm, question, history, k=k):
                        if isinstance(event, RewriteEvent):
                            rewrite = event.rewrite
                            if people and rewrite.changed:
                                click.secho(f"→ {rewrite.standalone}", dim=True)
                            if people and rewrite.note:
                                click.secho(f"note: {rewrite.note}", fg="yellow", err=True)
                        elif isinstance(event, TokenEvent) and people:
                            click.echo(event.text, nl=False)
                            sys.stdout.flush()
                            printed = True
                        elif isinstance(event, ConversationFinalEvent):
                            final = event.answer
                except RagError as exc:
                    if printed:
                        click.echo("")
                    click.echo(f"error: {exc.one_line()}", err=True)
                    failed = True
                    continue
                assert final is not None
                history.append({"role": "user", "content": question})
                history.append({"role": "assistant", "content": final.text})
                if as_json:
                    emit_json(answer_dict(final, rewrite))
                    sys.stdout.flush()
                else:
                    from cli.ask import _print_sources

                    click.echo("")
                    _print_sources(final)
                    click.echo("")
    finally:
        if llm is not None:
            llm.close()
    if failed:
        sys.exit(1)
