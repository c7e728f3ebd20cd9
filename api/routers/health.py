"""``GET /health``: each part's state; 200 when searches can be served, 503 with the reason when not.

The model server is probed with one short request (Ollama ``GET /api/tags``,
OpenAI-compatible ``GET /models``) without retries: a model server that is down
or lacks the model makes the status ``degraded``, not unavailable, because
searches still work and answers fall back to extractive ones.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.responses import Response

from api.service import ServiceDep
from rag import __version__
from rag.errors import RagError
from rag.settings import LLMSettings, Settings

router = APIRouter(tags=["health"])

PROBE_TIMEOUT_S = 2.0

HEALTH_EXAMPLE: dict[str, Any] = {
    "status": "ok",
    "reason": None,
    "version": __version__,
    "uptime_s": 42.0,
    "index": {
        "documents": 12,
        "chunks": 240,
        "generation": 7,
        "in_sync": True,
        "legs": {"sparse": {"chunks": 240, "generation": 7, "in_sync": True}},
        "dense_coverage": None,
    },
    "vector_store": {"status": "disabled", "backend": "edge", "points": None, "coverage": None},
    "llm": {"backend": "ollama", "model": "qwen2.5:7b-instruct", "reachable": True, "model_present": True},
    "jobs": {"queued": 0, "running": 0},
}


def _model_present(wanted: str, served: list[str]) -> bool:
    return wanted in served or (":" not in wanted and f"{wanted}:latest" in served)


def probe_llm(settings: LLMSettings, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Whether the model server answers and serves the configured model (one request, no retries)."""
    out: dict[str, Any] = {"backend": settings.backend, "model": settings.model}
    if settings.backend == "none":
        return {**out, "reachable": None, "model_present": None, "status": "disabled"}
    base = settings.url.strip().rstrip("/")
    ollama = settings.backend == "ollama"
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key and not ollama else {}
    try:
        with httpx.Client(timeout=timeout) as client:
            reply = client.get(base + ("/api/tags" if ollama else "/models"), headers=headers)
        reply.raise_for_status()
        data = reply.json()
        entries = data.get("models" if ollama else "data", []) if isinstance(data, dict) else []
        served = [str(e.get("name") or e.get("model") or e.get("id")) for e in entries if isinstance(e, dict)]
    except (httpx.HTTPError, ValueError) as exc:
        reason = (
            f"HTTP {exc.response.status_code}"
            if isinstance(exc, httpx.HTTPStatusError)
            else type(exc).__name__
        )
        return {**out, "reachable": False, "model_present": None, "status": "unreachable", "error": reason}
    present = _model_present(settings.model, served)
    return {
        **out,
        "reachable": True,
        "model_present": present,
        "status": "ok" if present else "model_missing",
    }


def index_health(status: dict[str, Any], settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    legs = status["legs"]
    index = {
        "documents": status["documents"],
        "chunks": status["chunks"],
        "generation": status["generation"],
        "in_sync": all(leg.get("in_sync", True) for leg in legs.values()),
        "legs": legs,
        # share of the chunks the dense leg has embedded: below 1 while it catches up after an
        # ingest (searches work meanwhile; chunks without a vector are ranked by the other legs)
        "dense_coverage": status.get("dense_coverage"),
    }
    dense = legs.get("dense")
    coverage = status.get("dense_coverage")
    building = dense is not None and coverage is not None and coverage < 1.0
    vectors: dict[str, Any] = {
        "backend": settings.vectors.backend,
        "status": "disabled" if dense is None else "building" if building else "ok",
        "points": None if dense is None else dense.get("chunks"),
        "coverage": None if dense is None else coverage,
    }
    return index, vectors


@router.get(
    "/health",
    summary="Health of the index, vector store and model server",
    responses={
        200: {
            "description": "Searches can be served.",
            "content": {"application/json": {"example": HEALTH_EXAMPLE}},
        },
        503: {"description": "Searches cannot be served; `reason` says why."},
    },
)
def health(service: ServiceDep) -> Response:
    settings = service.settings
    body: dict[str, Any] = {
        "status": "ok",
        "reason": None,
        "version": __version__,
        "uptime_s": round(time.time() - service.started_at, 1),
    }
    code = 200
    try:
        engine = service.engine()
        body["index"], body["vector_store"] = index_health(engine.status(), settings)
        last = engine.last_publish
        body["index"]["last_publish"] = last.as_dict() if last else None
        body["jobs"] = service.jobs().counts()
    except RagError as exc:
        body.update(status="unavailable", reason=exc.one_line(), index=None, vector_store=None, jobs=None)
        code = 503
    body["llm"] = probe_llm(settings.llm)
    if code == 200 and body["llm"]["status"] not in ("ok", "disabled"):
        body["status"] = "degraded"
        body["reason"] = (
            "the model server is not reachable: answers are extractive"
            if body["llm"]["status"] == "unreachable"
            else f"the model server lacks {settings.llm.model}: answers fail"
        )
    return JSONResponse(body, status_code=code)
