"""The dense-embedding seam: the :class:`Embedder` protocol and helpers shared by its adapters.

An embedder turns texts into L2-normalised float32 vectors. Queries and
passages are embedded by separate methods because retrieval models are trained
with different input prefixes for each side (see :data:`PREFIX_RULES`).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, runtime_checkable

import numpy as np

from rag.errors import BackendError, DependencyMissingError, InputError

__all__ = [
    "PREFIX_RULES",
    "Embedder",
    "Prefixes",
    "import_optional",
    "l2_normalize",
    "length_sorted_batches",
    "prefixes_for",
    "resolve_device",
    "variant_name",
]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors of shape ``(len(texts), dim)``.

    ``name`` identifies the model *and* every setting that changes its vectors
    (it keys the embedding cache), so two embedders with the same name must
    return the same vectors for the same text.
    """

    name: str
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Prefixes:
    """Text put in front of each query / passage before it is embedded."""

    query: str = ""
    passage: str = ""


# Prefix rules, first match wins; matched case-insensitively against the model
# name or path. Sources: the model cards of intfloat/multilingual-e5-* ("query: " /
# "passage: "), BAAI/bge-*-en-v1.5 and BAAI/bge-*-zh-v1.5 (a query instruction,
# nothing on passages), nomic-ai/nomic-embed-text-v1.5 ("search_query: " /
# "search_document: "); BAAI/bge-m3 and the rest need no prefix.
PREFIX_RULES: tuple[tuple[str, Prefixes], ...] = (
    (r"e5-.*instruct", Prefixes()),  # instruct variants take a task description instead
    (r"(^|[/_-])(multilingual-)?e5-", Prefixes("query: ", "passage: ")),
    (r"bge-m3", Prefixes()),
    (r"nomic-embed-text", Prefixes("search_query: ", "search_document: ")),
    (r"bge-.*-zh", Prefixes("为这个句子生成表示以用于检索相关文章：", "")),
    (r"bge-.*-en", Prefixes("Represent this sentence for searching relevant passages: ", "")),
)


def prefixes_for(model: str) -> Prefixes:
    """The prefixes a model expects, from :data:`PREFIX_RULES` (none when no rule matches)."""
    for pattern, prefixes in PREFIX_RULES:
        if re.search(pattern, model, flags=re.IGNORECASE):
            return prefixes
    return Prefixes()


def variant_name(base: str, prefixes: Prefixes, default: Prefixes) -> str:
    """``base``, or ``base`` plus a short digest of ``prefixes`` when they differ from the model's default.

    Different prefixes give different vectors, so they must give a different cache key.
    """
    if prefixes == default:
        return base
    digest = hashlib.sha256(f"{prefixes.query}\0{prefixes.passage}".encode()).hexdigest()[:8]
    return f"{base}+p{digest}"


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit Euclidean length, as float32 (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> Iterator[list[int]]:
    """Indices into ``lengths`` in batches, longest texts first.

    Texts of similar length share a batch, so little compute goes to padding.
    A batch holds at most ``batch_size`` texts and, when ``max_tokens`` is
    given, at most ``max_tokens`` padded tokens (its longest length times its
    size; a single text longer than that still gets a batch of its own). The
    longest batch comes first, so running out of memory shows at once.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batch: list[int] = []
    for i in order:
        # lengths only shrink along ``order``, so the batch's first text is its widest
        width = lengths[batch[0]] if batch else lengths[i]
        too_many_tokens = max_tokens is not None and width * (len(batch) + 1) > max_tokens
        if batch and (len(batch) == batch_size or too_many_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def import_optional(module: str, package: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise DependencyMissingError naming the pip package that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyMissingError(
            f"{purpose} needs the Python package '{package}' ({exc})",
            hint=f"pip install {package}",
        ) from exc


def resolve_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when torch sees a GPU, else ``"cpu"``; a CUDA device must exist."""
    torch = import_optional("torch", "torch", "the dense embedder")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(
            f"device {device!r} requested but torch sees no CUDA GPU", hint="use device 'cpu' or 'auto'"
        )
    return device


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded (Linux), checked without importing torch."""
    return os.path.exists("/proc/driver/nvidia/version")


def cpu_count() -> int:
    """CPU cores this process may run on (respects affinity masks and containers' cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def set_torch_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads in torch (default: one per available core).

    torch's own default counts every core of the host, which oversubscribes a
    container limited to a few cores.
    """
    torch = import_optional("torch", "torch", "the dense embedder")
    n = threads if threads is not None else cpu_count()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
