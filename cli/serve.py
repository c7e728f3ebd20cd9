"""`rag serve`: the HTTP API (FastAPI under uvicorn), one process that owns the index."""

from __future__ import annotations

import click

from cli.common import common_options
from rag.settings import Settings


@click.command("serve")
@click.option("--host", default=None, help="Address to bind [default: RAG_API__HOST, 127.0.0.1].")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port [default: RAG_API__PORT, 8000]."
)
@common_options
def serve_cmd(host: str | None, port: int | None, settings: Settings, as_json: bool) -> None:
    """Serve the HTTP API: search, cited answers, uploads, an OpenAI-compatible chat endpoint.

    \b
    One process serves the index of --data-dir; ingests through the API run in
    the background while searches go on. Docs at http://HOST:PORT/docs.
    A non-loopback --host needs a key (RAG_API__API_KEY, or RAG_API__READ_KEY
    and RAG_API__WRITE_KEY) unless RAG_API__ALLOW_INSECURE=true.

    \b
    Examples:
      rag serve
      RAG_API__API_KEY=$(openssl rand -hex 16) rag serve --host 0.0.0.0 --port 8000
      curl -s localhost:8000/v1/search -H 'content-type: application/json' -d '{"query": "ollama GPU"}'
    """
    import uvicorn

    from api.app import check_bind, create_app
    from rag.llm import make_llm

    if host is not None:
        settings.api.host = host
    if port is not None:
        settings.api.port = port
    check_bind(settings.api)
    llm = make_llm(settings.llm)  # a bad RAG_LLM__URL fails here, in one line, not at start-up
    if llm is not None:
        llm.close()
    app = create_app(settings)
    click.echo(
        f"serving {settings.data_dir} on http://{settings.api.host}:{settings.api.port} (docs at /docs)",
        err=True,
    )
    uvicorn.run(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
