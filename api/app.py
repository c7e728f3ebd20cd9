"""The HTTP API: ``create_app(settings)`` builds the FastAPI app (nothing happens at import time).

Run it with ``rag serve``: the server owns the data dir (:mod:`rag.owner`) and
other `rag` commands on it come through here. The API is transport (routing,
schemas, auth); consistency lives in the core (:mod:`rag.serving`) and every
write goes through :mod:`ingest.publish`. Routes: ``GET /health``; ``POST
/v1/search``; ``POST /v1/ask`` (JSON or server-sent events); ``GET/POST
/v1/documents``, ``DELETE /v1/documents/{id}``, ``POST /v1/ingest`` (paths on
this machine), ``GET /v1/jobs/{id}``, ``POST /v1/jobs/{id}/cancel``; OpenAI-compatible ``POST
/v1/chat/completions`` and ``GET /v1/models``; ``GET /v1/graph/entities/{name}``.
OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Keys, check_bind
from api.errors import ApiError, error_body, install_error_handlers
from api.routers import documents, graph, health, openai_compat, search
from api.service import Service
from api.web import install as install_web
from rag import __version__
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.embed import Embedder

__all__ = ["check_bind", "create_app"]

#: Room for multipart boundaries and part headers on top of RAG_API__MAX_UPLOAD_MB.
MULTIPART_OVERHEAD = 64 * 1024

DESCRIPTION = """
Ask questions about your own notes (markdown, text, PDF): hybrid search (BMX + dense),
grounded answers with citations, and an OpenAI-compatible chat endpoint.

**Authentication.** When the server has keys (`RAG_API__API_KEY`, or `RAG_API__READ_KEY` /
`RAG_API__WRITE_KEY`), send `Authorization: Bearer <key>`. Errors always look like
`{"error": {"type", "message", "hint"}}`.

**Try it.**

    curl -s localhost:8000/v1/search -H 'content-type: application/json' -d '{"query": "ollama GPU", "k": 5}'
    curl -s localhost:8000/v1/documents -F files=@notes.md
    curl -N localhost:8000/v1/ask -H 'content-type: application/json' -d '{"question": "...", "stream": true}'
"""


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        error_body(
            "too_large",
            f"the upload is larger than the {limit / 2**20:g} MiB limit",
            "raise RAG_API__MAX_UPLOAD_MB or upload fewer/smaller files per request",
        ),
        status_code=413,
    )


class UploadLimit:
    """413 for an upload body over the limit: at once from ``Content-Length``, else as soon as
    more than the limit has been received (chunked bodies), before it is all read."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, path: str = "/v1/documents") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes + MULTIPART_OVERHEAD
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise ApiError(
                        413,
                        f"the upload is larger than the {self.max_bytes / 2**20:g} MiB limit",
                        hint="raise RAG_API__MAX_UPLOAD_MB or upload fewer/smaller files per request",
                    )
            return message

        await self.app(scope, limited, send)


def create_app(
    settings: Settings, *, embedder: Embedder | None = None, watch: list[Path] | None = None
) -> FastAPI:
    """The app for ``settings``. ``embedder`` replaces the configured embedding model (tests);
    the folders in ``watch`` are kept in sync while the app runs (:mod:`ingest.watch`).

    The index is opened when the app starts (lifespan) and closed when it stops."""
    service = Service(settings, embedder=embedder, watch=watch)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="rag-notes",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "search", "description": "Search and cited answers."},
            {"name": "documents", "description": "What is indexed; uploads and deletes."},
            {"name": "jobs", "description": "Background ingests and deletes: poll or cancel them."},
            {"name": "openai", "description": "OpenAI-compatible chat, for existing chat clients."},
            {"name": "graph", "description": "The entity graph linking chunks."},
            {"name": "health", "description": "Liveness and the state of each part."},
        ],
    )
    app.state.service = service
    app.state.keys = Keys.from_settings(settings.api)
    install_error_handlers(app)
    app.add_middleware(UploadLimit, max_bytes=int(settings.api.max_upload_mb * 2**20))
    app.include_router(health.router)
    app.include_router(search.router)
    app.include_router(documents.router)
    app.include_router(openai_compat.router)
    app.include_router(graph.router)
    install_web(app)  # the web page at /, /search, /documents; offline /docs
    return app
