"""One typed settings object, read from env vars (prefix ``RAG_``, nested with
``__``) and an optional TOML config file. Library code receives it as an
argument; nothing reads the environment at import time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rag.errors import ConfigError

DEFAULT_INCLUDE = ["*.md", "*.markdown", "*.txt", "*.pdf"]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "rag"


class ChunkingSettings(BaseModel):
    size: int = Field(
        350,
        ge=32,
        le=8192,
        description="Target chunk size in units: one CJK character or one Latin word/number/symbol run = 1 unit.",
    )
    overlap: int = Field(
        50, ge=0, le=2048, description="Units repeated between consecutive chunks of one section."
    )
    context: bool = Field(
        True,
        description="Index each chunk with what identifies it but is not in its text: the document title, "
        "the page's running header (PDFs), the column headers of the table it starts inside. "
        "The text shown and its offsets do not change.",
    )

    @field_validator("overlap")
    @classmethod
    def _overlap_below_size(cls, v: int, info: Any) -> int:
        size = info.data.get("size", 350)
        if v >= size:
            raise ValueError(f"overlap ({v}) must be smaller than size ({size})")
        return v


class IngestSettings(BaseModel):
    include: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INCLUDE),
        description="Glob patterns (matched against the file name and the relative path) of files to ingest.",
    )
    exclude: list[str] = Field(
        default_factory=list, description="Glob patterns of files or folders to skip (e.g. 'drafts/**')."
    )
    skip_hidden: bool = Field(True, description="Skip hidden files and folders such as .git and .obsidian.")
    max_file_mb: float = Field(
        100.0, gt=0, description="Files larger than this many MiB are reported as failed."
    )
    redact_secrets: bool = Field(
        True, description="Replace API keys, passwords and private keys with placeholders before indexing."
    )
    pdf_mode: Literal["text", "markdown"] = Field(
        "text",
        description="PDF extraction: 'text' = pymupdf text with headings/tables rebuilt (fast); "
        "'markdown' = pymupdf4llm (slower, see README).",
    )
    commit_every: int = Field(64, ge=1, description="Documents written per store transaction.")
    watch_debounce_ms: int = Field(
        300,
        ge=10,
        le=60_000,
        description="`--watch`: longest time file events are gathered into one sync (a batch also ends "
        "50 ms after the last event).",
    )
    workers: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1),
        ge=1,
        le=64,
        description="Processes that read and chunk files in parallel (1 = in-process).",
    )


class SparseSettings(BaseModel):
    cjk: Literal["jieba", "bigram", "jieba+bigram", "unigram+bigram"] | None = Field(
        None, description="How CJK runs are tokenized for BMX (None = the measured default, see README)."
    )
    alpha: float | None = Field(
        None, description="BMX alpha (None = derived from the corpus, as in the paper)."
    )
    beta: float | None = Field(
        None, ge=0, description="BMX beta (None = 1/ln(1+N), the reference implementation's default)."
    )


class EmbeddingSettings(BaseModel):
    model: str = Field(
        "e5-small",
        description="'e5-small' (multilingual-e5-small, weights shipped offline), 'use', 'minilm', "
        "'ollama:<name>' (an embedding model on the Ollama server, e.g. 'ollama:bge-m3'), "
        "or any sentence-transformers model name or path (e.g. 'BAAI/bge-m3'). 'none' disables the dense leg.",
    )
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1' ...")
    batch_size: int = Field(32, ge=1, le=4096, description="Passages per embedding batch.")
    query_runtime: Literal["auto", "torch", "numpy"] = Field(
        "auto",
        description="How e5-small embeds queries on the CPU: 'numpy' needs no torch import (cold start "
        "~2 s faster, ~2x slower per query), 'torch' is faster once loaded; 'auto' = numpy for a one-off "
        "`rag search QUERY`, torch everywhere else.",
    )
    runtime: Literal["auto", "torch", "onnx", "onnx-int8", "onnx-int8-pc", "openvino", "openvino-bf16"] = (
        Field(
            "auto",
            description="How e5-small embeds batches on the CPU: 'torch', ONNX Runtime ('onnx' float32; "
            "'onnx-int8' int8 MatMuls, other vectors; 'onnx-int8-pc' the same with per-channel weight scales) "
            "or OpenVINO ('openvino' float32; 'openvino-bf16' "
            "bfloat16 where the CPU has it, other vectors); exported once into the model cache (RAG_MODEL_DIR). "
            "'auto' = the measured CPU default (bench/results/embed_runtime.md); torch on a GPU.",
        )
    )
    url: str | None = Field(
        None,
        description="Ollama server for 'ollama:<name>' models (None = the LLM's URL, RAG_LLM__URL).",
    )
    timeout_s: float = Field(
        120.0,
        gt=0,
        description="'ollama:<name>' models: seconds one embedding request may take (covers a cold model load).",
    )


class VectorSettings(BaseModel):
    backend: Literal["edge", "local", "server"] = Field(
        "edge",
        description="'edge' = embedded Qdrant engine with HNSW (default, no server); 'local' = qdrant-client "
        "local mode (brute force); 'server' = a Qdrant server at `url`.",
    )
    url: str | None = Field(
        None, description="Qdrant server URL for backend 'server', e.g. http://qdrant:6333."
    )
    api_key: str | None = Field(None, description="Qdrant API key (server mode).")
    collection: str = Field("chunks", description="Collection name (the model name is appended).")
    shard_number: int | None = Field(
        None,
        ge=1,
        description="Server mode: shards a new collection is split into (None = the server's default, 1); "
        "more shards spread the points over more nodes of a cluster. Ignored for an existing collection.",
    )
    replication_factor: int | None = Field(
        None,
        ge=1,
        description="Server mode: copies of each shard in a new collection (None = the server's default, 1); "
        "2 or more keeps the collection readable while a node is down. Ignored for an existing collection.",
    )


class RetrievalSettings(BaseModel):
    fusion: Literal["weighted", "rrf", "zscore", "adaptive", "rescored", "prf"] = Field(
        "weighted",
        description="'weighted' = min-max normalised weighted sum; 'rrf' = reciprocal rank fusion; "
        "'zscore' = z-scores over each leg's list; 'adaptive' = z-scores with per-query weights from the "
        "top-1 margins; 'rescored' = every candidate scored by both legs, z-scores over the union; 'prf' = "
        "'rescored' after one round of dense pseudo-relevance feedback (unset: measured per embedding "
        "model; see README).",
    )
    rrf_k: int = Field(60, ge=1, description="k in RRF's 1/(k + rank).")
    prf_first_dense_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="'prf': dense weight of the first ranking that picks the feedback chunks.",
    )
    prf_m: int = Field(10, ge=1, le=100, description="'prf': top chunks of the first ranking fed back.")
    prf_beta: float = Field(0.5, ge=0, description="'prf': weight of their mean vector added to the query.")
    prf_search: bool = Field(
        False,
        description="'prf': search the dense leg again with the new query vector (one more vector search) "
        "instead of re-scoring the candidates found with it (measured: no better left out).",
    )
    rerank: Literal["none", "llm"] = Field(
        "none",
        description="'llm' = the configured LLM re-orders the top rerank_depth hybrid hits (one more LLM call "
        "per search; gain not measured here). 'none' = the fused order.",
    )
    rerank_depth: int = Field(20, ge=2, le=100, description="Hybrid hits the LLM re-ranks.")
    weight_sparse: float = Field(
        0.9, ge=0, description="Fusion weight of the BMX leg (unset: 1 - the dense weight)."
    )
    weight_dense: float = Field(
        0.1,
        ge=0,
        description="Fusion weight of the dense leg (unset: measured per embedding model, e5-small 0.4, "
        "use 0.1, others 0.1; see README).",
    )
    weight_graph: float = Field(
        0.0,
        ge=0,
        description="Fusion weight of the graph leg. 0 by default: measured, it adds nothing significant "
        "beside a dense leg; with BMX alone 0.1 gains +0.001-0.02 nDCG@10, never loses (see README).",
    )
    candidates: int = Field(100, ge=1, le=2000, description="Hits taken from each leg before fusion.")


class LLMSettings(BaseModel):
    backend: Literal["ollama", "openai", "none"] = Field(
        "ollama",
        description="'ollama' (default), 'openai' (any OpenAI-compatible server: vLLM, llama.cpp, LM Studio), "
        "'none' (never call an LLM: extractive answers only).",
    )
    url: str = Field(
        "http://127.0.0.1:11434",
        description="Server base URL. Ollama: http://HOST:11434; OpenAI-compatible: http://HOST:8000/v1.",
    )
    model: str = Field("qwen2.5:7b-instruct", description="Model name as the server knows it.")
    api_key: str | None = Field(None, description="Bearer token for OpenAI-compatible servers.")
    num_ctx: int | None = Field(
        None, ge=512, description="Context window to request (None = read the model's own from /api/show)."
    )
    num_ctx_max: int = Field(
        8192,
        ge=512,
        description="Upper bound on the context window read from the model when num_ctx is None (a 128k "
        "window allocates a very large KV cache).",
    )
    max_tokens: int = Field(1024, ge=16, description="Upper bound on generated tokens per answer.")
    temperature: float = Field(0.1, ge=0, le=2, description="Sampling temperature.")
    connect_timeout_s: float = Field(5.0, gt=0, description="Seconds to wait for a TCP connection.")
    first_token_timeout_s: float = Field(
        300.0, gt=0, description="Seconds to wait for the first token (covers a cold model load)."
    )
    read_timeout_s: float = Field(60.0, gt=0, description="Seconds allowed between two streamed tokens.")
    retries: int = Field(2, ge=0, le=10, description="Retries on connection errors before the first token.")
    retry_backoff_s: float = Field(
        0.5, ge=0, description="Wait before the first retry; doubles for each further retry."
    )


class AnswerSettings(BaseModel):
    k: int = Field(6, ge=1, le=50, description="Retrieved chunks offered to the model as numbered context.")
    context_budget: float = Field(
        0.6, gt=0, le=0.95, description="Share of the model's context window the retrieved blocks may use."
    )
    min_evidence: float | None = Field(
        None,
        description="Refuse to answer below this evidence score (None = the measured default, see README).",
    )
    fallback: bool = Field(
        True,
        description="When the LLM server cannot be reached, answer extractively (best sentences, cited) "
        "instead of failing.",
    )


class GraphSettings(BaseModel):
    enabled: bool = Field(True, description="Build the entity graph at ingest (the graph leg needs it).")
    extractor: Literal["rules", "llm"] = Field(
        "rules",
        description="'rules' = fast extraction without an LLM; 'llm' = also ask the configured LLM for entities "
        "(JSON output, per-chunk timeout, resumable).",
    )
    aliases: Path | None = Field(
        None,
        description="User alias table (TOML: [aliases] canonical = ['variant', ...]); None = "
        "<data_dir>/aliases.toml when that file exists.",
    )
    hop_decay: float = Field(
        0.5, ge=0, le=1, description="Weight of chunks reached through a 1-hop neighbour entity."
    )
    max_neighbours: int = Field(10, ge=0, le=200, description="Neighbour entities followed per query entity.")
    llm_timeout_s: float = Field(60.0, gt=0, description="Seconds per chunk for LLM extraction.")


class ApiSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address `rag serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `rag serve` listens on.")
    api_key: str | None = Field(
        None, description="Bearer token for every endpoint (read and write) unless the keys below are set."
    )
    read_key: str | None = Field(None, description="Bearer token for read endpoints (search, ask, list).")
    write_key: str | None = Field(None, description="Bearer token for write endpoints (upload, delete).")
    allow_insecure: bool = Field(
        False, description="Allow binding a non-loopback address without an API key (not recommended)."
    )
    max_upload_mb: float = Field(50.0, gt=0, description="Largest accepted upload (all files of a request).")
    max_question_chars: int = Field(4000, ge=1, description="Longest accepted query or question.")
    max_k: int = Field(100, ge=1, le=1000, description="Largest accepted k.")
    publish_interval_s: float = Field(
        10.0,
        gt=0,
        description="During a long ingest, make what is committed so far searchable this often (seconds); "
        "also how often an idle server looks for changes another process committed.",
    )


class Settings(BaseSettings):
    """All settings. Env: ``RAG_DATA_DIR``, ``RAG_CHUNKING__SIZE``, ``RAG_INGEST__EXCLUDE='["drafts/**"]'`` ..."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(default_factory=default_data_dir, description="Where all index state lives.")
    model_dir: Path | None = Field(
        None,
        description="Where converted model weights live, shared by every data dir (RAG_MODEL_DIR); "
        "None = $XDG_CACHE_HOME/rag-notes/models or ~/.cache/rag-notes/models. Never inside a data dir.",
    )
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)  # type: ignore[arg-type]
    ingest: IngestSettings = Field(default_factory=IngestSettings)  # type: ignore[arg-type]
    sparse: SparseSettings = Field(default_factory=SparseSettings)  # type: ignore[arg-type]
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)  # type: ignore[arg-type]
    vectors: VectorSettings = Field(default_factory=VectorSettings)  # type: ignore[arg-type]
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)  # type: ignore[arg-type]
    llm: LLMSettings = Field(default_factory=LLMSettings)  # type: ignore[arg-type]
    answer: AnswerSettings = Field(default_factory=AnswerSettings)  # type: ignore[arg-type]
    graph: GraphSettings = Field(default_factory=GraphSettings)  # type: ignore[arg-type]
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _measured_fusion_weights(self) -> Settings:
        """Fusion method, weights and feedback parameters not set explicitly follow the embedding
        model (measured defaults)."""
        from rag.retrieval.fusion import default_dense_weight, default_feedback, default_fusion

        r = self.retrieval
        explicit = set(r.model_fields_set)
        if "fusion" not in explicit:
            r.fusion = default_fusion(self.embedding.model)  # type: ignore[assignment]
        fb = default_feedback(self.embedding.model)
        for field, value in (
            ("prf_first_dense_weight", fb.first_dense_weight),
            ("prf_m", fb.m),
            ("prf_beta", fb.beta),
        ):
            if field not in explicit:
                setattr(r, field, value)
        if "weight_dense" not in explicit:
            r.weight_dense = default_dense_weight(self.embedding.model, r.fusion)
        if "weight_sparse" not in explicit:
            r.weight_sparse = round(max(0.0, 1.0 - r.weight_dense), 6)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from (in priority order) overrides, env vars (``RAG_*``) and a
    TOML file (``config_file`` or env ``RAG_CONFIG``)."""
    cls: type[Settings] = Settings
    path = config_file or (Path(os.environ["RAG_CONFIG"]) if os.environ.get("RAG_CONFIG") else None)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}", hint="check --config / RAG_CONFIG")
        cls = type("Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}})
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read settings: {exc}") from None
