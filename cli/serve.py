"""`rag serve`: the HTTP API (FastAPI under uvicorn), the process that owns the data dir.

While it runs, the data dir's owner record (:mod:`rag.owner`) says how to reach
it, and other `rag` commands on the data dir go through it. SIGTERM and Ctrl-C
stop it gracefully (running job finished or cancelled, stores closed) with exit
code 0.
"""

from __future__ import annotations

import signal
from pathlib import Path

import click

from cli.common import common_options
from rag.settings import Settings


@click.command("serve")
@click.option("--host", default=None, help="Address to bind [default: RAG_API__HOST, 127.0.0.1].")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port [default: RAG_API__PORT, 8000]."
)
@click.option(
    "--watch",
    "watch",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Keep this folder in sync while serving (repeatable): new, changed, renamed, deleted files.",
)
@common_options
def serve_cmd(
    host: str | None, port: int | None, watch: tuple[Path, ...], settings: Settings, as_json: bool
) -> None:
    """Serve the HTTP API: search, cited answers, uploads, an OpenAI-compatible chat endpoint.

    \b
    One process serves the index of --data-dir; ingests through the API run in
    the background while searches go on. Docs at http://HOST:PORT/docs.
    A non-loopback --host needs a key (RAG_API__API_KEY, or RAG_API__READ_KEY
    and RAG_API__WRITE_KEY) unless RAG_API__ALLOW_INSECURE=true.

    \b
    Other `rag` commands on the same --data-dir (search, ask, documents,
    ingest, delete) go through this server while it runs.

    \b
    Examples:
      rag serve
      rag serve --watch ~/notes
      RAG_API__API_KEY=$(openssl rand -hex 16) rag serve --host 0.0.0.0 --port 8000
      curl -s localhost:8000/v1/search -H 'content-type: application/json' -d '{"query": "ollama GPU"}'
    """
    import uvicorn

    from api.app import check_bind, create_app
    from api.auth import Keys, is_loopback
    from rag.llm import make_llm
    from rag.owner import Ownership

    if host is not None:
        settings.api.host = host
    if port is not None:
        settings.api.port = port
    check_bind(settings.api)
    llm = make_llm(settings.llm)  # a bad RAG_LLM__URL fails here, in one line, not at start-up
    if llm is not None:
        llm.close()
    host = settings.api.host.strip("[]")
    if host in ("0.0.0.0", "::", "") or (not is_loopback(host) and ":" in host):
        host = "127.0.0.1"  # every address: this machine's clients use loopback
    url = f"http://[{host}]:{settings.api.port}" if ":" in host else f"http://{host}:{settings.api.port}"
    ownership = Ownership.acquire(
        settings.data_dir,
        "server",
        url=url,
        auth=Keys.from_settings(settings.api).enabled,
        command="rag serve",
    )
    try:
        if ownership.taken_over is not None:
            click.echo(
                f"taking over {settings.data_dir} from {ownership.taken_over.describe()}, which is gone",
                err=True,
            )
        app = create_app(settings, watch=list(watch))
        click.echo(
            f"serving {settings.data_dir} on http://{settings.api.host}:{settings.api.port} (docs at /docs)"
            + (f", watching {', '.join(map(str, watch))}" if watch else ""),
            err=True,
        )
        # uvicorn re-raises the signal that stopped it once it has shut down; with these handlers
        # in place that is a no-op, so a SIGTERM or Ctrl-C ends a clean shutdown with exit code 0.
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            uvicorn.run(
                app,
                host=settings.api.host,
                port=settings.api.port,
                log_level="info",
                access_log=False,
                timeout_graceful_shutdown=10,
            )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        ownership.release()
