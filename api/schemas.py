"""Request and response bodies, with the examples shown at ``/docs``.

Responses are built as plain dicts (the same objects the CLI prints with
``--json``) and returned without re-validation; the response models here
document them. Limits that come from settings (``max_k``,
``max_question_chars``) are checked in the routes, so the schema states the
absolute bounds and the field descriptions name the setting.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["hybrid", "sparse", "dense", "graph"]

HIT_EXAMPLE: dict[str, Any] = {
    "rank": 1,
    "chunk_id": "5f0c2a9e81d34b7a",
    "doc_id": "a41f07c29b3e5d18",
    "source": "docker/gpu.md",
    "page": None,
    "start": 0,
    "end": 96,
    "heading": "Docker 封装 > 用 GPU 启动 Ollama",
    "text": "用 `docker run --gpus all` 启动 ollama，端口 11434。",
    "score": 0.93,
    "scores": {"sparse": 7.41, "dense": 0.62, "graph": None, "fused": 0.93},
}
CITATION_EXAMPLE: dict[str, Any] = {
    "n": 1,
    "chunk_id": "5f0c2a9e81d34b7a",
    "source": "docker/gpu.md",
    "page": None,
    "heading": "Docker 封装 > 用 GPU 启动 Ollama",
    "quote": "用 `docker run --gpus all` 启动 ollama，端口 11434。",
}


# -- search ----------------------------------------------------------------------------------------


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"query": "ollama 用 GPU 启动", "k": 5, "mode": "hybrid"}]},
    )

    query: str = Field(
        min_length=1,
        max_length=1_000_000,
        description="What to search for (at most RAG_API__MAX_QUESTION_CHARS characters).",
    )
    k: int = Field(10, ge=1, le=1000, description="Number of hits (at most RAG_API__MAX_K).")
    mode: Mode = Field("hybrid", description="Which legs to use: fused hybrid or one leg.")


class Hit(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [HIT_EXAMPLE]})

    rank: int
    chunk_id: str
    doc_id: str
    source: str = Field(description="Path of the file relative to the folder it was ingested from.")
    page: int | None = Field(description="1-based page for PDFs, null for text.")
    start: int = Field(description="Offset of the chunk in the document's extracted text.")
    end: int
    heading: str
    text: str
    score: float
    scores: dict[str, float | None] = Field(description="Each leg's score (null where it did not return it).")


class SearchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"query": "ollama 用 GPU 启动", "mode": "hybrid", "took_ms": 3.2, "hits": [HIT_EXAMPLE]}
            ]
        }
    )

    query: str
    mode: Mode
    took_ms: float
    hits: list[Hit]
    dense_coverage: float | None = Field(
        None,
        description="Share of the chunks the dense leg has embedded (below 1 while it catches up after "
        "an ingest: chunks without a vector are ranked by the other legs); absent when no dense model "
        "is configured.",
    )


# -- ask -------------------------------------------------------------------------------------------


class HistoryMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=1_000_000)


class AskRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"question": "怎样用 docker 在 GPU 上启动 ollama？", "k": 6, "stream": False},
                {"question": "Which port does Ollama listen on?", "stream": True},
                {
                    "question": "它默认监听哪个端口？",
                    "history": [
                        {"role": "user", "content": "Ollama 是什么？"},
                        {"role": "assistant", "content": "Ollama 是本地运行大模型的工具 [1]。"},
                    ],
                },
            ]
        },
    )

    question: str = Field(
        min_length=1, max_length=1_000_000, description="At most RAG_API__MAX_QUESTION_CHARS characters."
    )
    k: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Chunks offered to the model (default RAG_ANSWER__K; at most RAG_API__MAX_K).",
    )
    stream: bool = Field(
        False,
        description="Server-sent events: `token` events ({text}), then one `citations` event, then one "
        "`final` event (the whole answer); `error` if the model fails midway.",
    )
    no_llm: bool = Field(False, description="Do not call the model: answer with the best cited sentences.")
    history: list[HistoryMessage] = Field(
        default_factory=list,
        max_length=200,
        description="Earlier turns of the conversation, oldest first. A follow-up question is rewritten "
        "into a standalone one before retrieval (by the model, else by carrying the earlier questions' "
        "key terms); the answer then carries `rewrite` and a stream starts with a `rewrite` event.",
    )


class Citation(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [CITATION_EXAMPLE]})

    n: int
    chunk_id: str
    source: str
    page: int | None
    heading: str
    quote: str


class AskResponse(BaseModel):
    """The `rag ask --json` object."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "answer": "用 `docker run --gpus all` 启动 ollama [1]。",
                    "citations": [CITATION_EXAMPLE],
                    "hits": [HIT_EXAMPLE],
                    "llm": {"backend": "ollama", "model": "qwen2.5:7b-instruct"},
                    "kind": "generated",
                    "refused": False,
                }
            ]
        },
    )

    answer: str
    citations: list[Citation]
    hits: list[Hit]
    llm: dict[str, str] | None
    kind: Literal["generated", "extractive", "refused"]
    refused: bool
    dense_coverage: float | None = Field(
        None,
        description="Share of the chunks the dense leg has embedded (below 1 while it catches up after "
        "an ingest: chunks without a vector are ranked by the other legs); absent when no dense model "
        "is configured.",
    )


# -- documents and jobs ----------------------------------------------------------------------------


class Document(BaseModel):
    doc_id: str | None = Field(description="None for a file that failed or is not ingested yet.")
    source: str
    path: str
    format: str | None
    pages: int | None
    chunks: int
    encoding: str | None
    notes: list[str] = Field(description="What ingest noted: repairs, redactions.")
    ingested_at: float | None = Field(description="Unix time of the last (re)ingest.")
    status: Literal["indexed", "pending", "failed"] = Field(
        description="`indexed`; `pending` (a change waits to be ingested); `failed` (see `error`)."
    )
    error: str | None = Field(description="Why the file could not be ingested (status `failed`).")
    uploaded: bool = Field(description="Whether the file came through POST /v1/documents.")


class IngestRequest(BaseModel):
    """Files and folders on the server's machine to ingest (what `rag ingest` sends to the owner)."""

    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(min_length=1, max_length=10_000, description="Absolute paths.")
    include: list[str] = Field(default_factory=list, description="As `rag ingest --include`.")
    exclude: list[str] = Field(default_factory=list, description="As `rag ingest --exclude`.")
    no_redact: bool = Field(False, description="As `rag ingest --no-redact`.")


class DocumentList(BaseModel):
    total: int
    documents: list[Document]


class JobInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "job-3-1f2e3d4c",
                    "kind": "ingest",
                    "status": "done",
                    "files": ["gpu.md"],
                    "doc_id": None,
                    "created_at": 1767225600.0,
                    "started_at": 1767225600.1,
                    "finished_at": 1767225600.9,
                    "progress": {"done": 1, "total": 1},
                    "result": {"added": 1, "updated": 0, "unchanged": 0, "failed": [], "chunks": 12},
                    "error": None,
                }
            ]
        }
    )

    id: str
    kind: Literal["ingest", "delete", "sync", "watch"]
    status: Literal["queued", "running", "done", "failed"]
    files: list[str]
    doc_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: dict[str, int] = Field(
        description="Files `done` of `total`; while the dense leg embeds, chunks `embedded` of `to_embed`."
    )
    result: dict[str, Any] | None = Field(
        description="The ingest report (as `rag ingest --json`) or the deletion."
    )
    error: dict[str, Any] | None


class UploadedFile(BaseModel):
    name: str = Field(description="The name it was saved under (sanitised; the document's `source`).")
    bytes: int


class UploadResponse(BaseModel):
    job: JobInfo
    files: list[UploadedFile]


class DeleteResponse(BaseModel):
    deleted: bool
    doc_id: str
    source: str
    chunks: int
    removed_file: bool = Field(
        description="True when the document was an upload and its file was removed too."
    )
    job: str


class JobList(BaseModel):
    jobs: list[JobInfo]


# -- OpenAI-compatible -------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat request; the last user message is the question and the messages before it
    are the conversation it follows up on (system messages are not used)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "model": "rag",
                    "messages": [{"role": "user", "content": "Which port does Ollama listen on?"}],
                    "stream": False,
                }
            ]
        },
    )

    model: str = Field(description="`rag` (see GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="Only 1 is supported.")
    max_tokens: int | None = Field(
        None, ge=1, description="Ignored: the server's RAG_LLM__MAX_TOKENS applies."
    )
    temperature: float | None = Field(None, ge=0, le=2, description="Ignored: RAG_LLM__TEMPERATURE applies.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
