"""`rag ask`: a grounded, cited answer from the indexed notes, streamed to the terminal."""

from __future__ import annotations

import sys
from typing import Any

import click

from cli.common import answer_k_option, common_options, emit_json
from rag.settings import Settings


@click.command("ask")
@click.argument("question")
@click.option("--no-llm", is_flag=True, help="Do not call a model: answer with the best cited sentences.")
@answer_k_option
@common_options
def ask_cmd(question: str, no_llm: bool, k: int | None, settings: Settings, as_json: bool) -> None:
    """Answer QUESTION from your documents, citing them as [n] (file, page, quote).

    \b
    The answer streams from the configured model (Ollama by default,
    RAG_LLM__URL / RAG_LLM__MODEL), in the question's language, using only the
    retrieved passages. When the passages are too weak it says the documents do
    not say. With --no-llm, or when the model server cannot be reached, it
    prints the best sentences from the top passages instead, labelled as such.
    QUESTION `-` reads the question from stdin.

    \b
    Examples:
      rag ask "怎样用 docker 在 GPU 上启动 ollama？"
      rag ask "which port does ollama listen on?" -k 4 --no-llm
      echo "num_ctx 有什么用？" | rag ask - --json | jq -r .answer
    """
    from rag.answer import Answer, FinalEvent, TokenEvent, answer_stream
    from rag.engine import Engine
    from rag.errors import InputError, RagError
    from rag.llm import make_llm

    if question == "-":
        question = sys.stdin.read()
    if not question.strip():
        raise InputError("the question is empty", hint='e.g. rag ask "which port does ollama use?"')

    from cli.remote import owner_client

    client = owner_client(settings, "read", doing="ask")
    if client is not None:
        with client:
            _ask_owner(client, question, k, no_llm, as_json)
        return

    llm = None if no_llm else make_llm(settings.llm)
    final: Answer | None = None
    coverage: float | None = None
    printed = False
    try:
        with Engine.open(settings) as engine:
            for event in answer_stream(engine, llm, question, k=k):
                if isinstance(event, TokenEvent) and not as_json:
                    click.echo(event.text, nl=False)
                    sys.stdout.flush()
                    printed = True
                elif isinstance(event, FinalEvent):
                    final = event.answer
            coverage = engine.dense_coverage()
    except RagError:
        if printed:
            click.echo("")  # end the partial answer's line before the error line
        raise
    finally:
        if llm is not None:
            llm.close()
    assert final is not None
    if as_json:
        body = final.as_dict()
        if coverage is not None:  # a dense leg is configured: how much of it is built
            body["dense_coverage"] = coverage
        emit_json(body)
        return
    click.echo("")
    _print_sources(final.as_dict())


def _ask_owner(client: Any, question: str, k: int | None, no_llm: bool, as_json: bool) -> None:
    """The same answer, asked of the server that owns the data dir (streamed unless --json)."""
    from rag.errors import LLMStreamError

    if as_json:
        emit_json(client.ask(question, k, no_llm))
        return
    final: dict[str, Any] | None = None
    printed = False
    for event, data in client.ask_stream(question, k, no_llm):
        if event == "token":
            click.echo(data.get("text", ""), nl=False)
            sys.stdout.flush()
            printed = True
        elif event == "final":
            final = data
        elif event == "error":
            if printed:
                click.echo("")
            err = data.get("error", {})
            raise LLMStreamError(str(err.get("message", "the answer failed")), hint=err.get("hint"))
    if final is None:
        raise LLMStreamError("the server's answer stream ended early")
    click.echo("")
    _print_sources(final)


def _print_sources(answer: Any) -> None:
    """Sources, notes and timing of an answer (an ``Answer`` or its ``rag ask --json`` object)."""
    from rich.console import Console
    from rich.markup import escape

    if not isinstance(answer, dict):
        answer = answer.as_dict()

    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    if answer["citations"]:
        out.print("\n[bold]Sources[/]")
        for c in answer["citations"]:
            where = c["source"] + (f" p.{c['page']}" if c.get("page") is not None else "")
            heading = f"  [green]{escape(c['heading'])}[/]" if c.get("heading") else ""
            out.print(f" [bold]\\[{c['n']}][/] [cyan]{escape(where)}[/]{heading}")
            out.print(f"     [dim]“{escape(c['quote'])}”[/]")
    if answer.get("invalid_citations"):
        numbers = ", ".join(f"[{n}]" for n in answer["invalid_citations"])
        err.print(f"[yellow]removed citations of blocks that were not sent: {numbers}[/]")
    if answer.get("note"):
        err.print(f"[yellow]note:[/] {escape(answer['note'])}")
    t = answer.get("timings_ms") or {}
    llm = answer.get("llm")
    if answer.get("kind") == "refused" and llm is None:
        why = answer.get("note") or f"evidence {answer['evidence']:.2f} below {answer['min_evidence']:.2f}"
        detail = f"{why}: the model was not asked"
    elif llm is not None:
        first = f", first token {t['first_token'] / 1000:.1f} s" if "first_token" in t else ""
        detail = f"{llm['backend']}/{llm['model']}, {len(answer.get('context') or [])} blocks{first}"
    else:
        detail = "extractive, no model"
    err.print(f"[dim]{escape(detail)}, {t.get('total', 0.0) / 1000:.1f} s[/]")
