"""``GET /v1/graph/entities/{name}``: what the entity graph knows about one entity."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from starlette.responses import Response

from api.auth import require_read
from api.service import EngineDep
from rag.errors import NotFoundError

router = APIRouter(tags=["graph"], dependencies=[Depends(require_read)])

ENTITY_EXAMPLE: dict[str, Any] = {
    "name": "Ollama",
    "key": "ollama",
    "kind": "product",
    "aliases": ["ollama"],
    "n_mentions": 2,
    "mentions": [
        {
            "chunk_id": "5f0c2a9e81d34b7a",
            "doc_id": "a41f07c29b3e5d18",
            "source": "docker/gpu.md",
            "page": None,
        }
    ],
    "neighbours": [{"name": "GPU", "weight": 2}],
    "documents": ["docker/gpu.md", "ollama-en.md"],
}


@router.get(
    "/v1/graph/entities/{name}",
    summary="One entity of the graph: mentions, aliases, neighbours",
    responses={
        200: {"content": {"application/json": {"example": ENTITY_EXAMPLE}}},
        404: {"description": "No such entity (any spelling or alias), or the graph is disabled."},
    },
)
def describe(
    name: str,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Mentions listed at most.")] = 100,
    neighbours: Annotated[int, Query(ge=0, le=200, description="Neighbours listed at most.")] = 20,
) -> Response:
    """The entity named `name` (any spelling or alias of it) as the searches see the graph now."""
    if "graph" not in engine.available_legs():
        raise NotFoundError(
            "the entity graph is disabled", hint="set RAG_GRAPH__ENABLED=true and re-run `rag ingest`"
        )
    from rag.graph import describe_entity

    with engine.reading():
        card = describe_entity(engine, name, limit=limit, neighbours=neighbours)
    return JSONResponse(card)
