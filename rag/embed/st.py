"""Any sentence-transformers model, by hub name or local path.

A local path loads with the network off (``local_files_only`` and
``HF_HUB_OFFLINE=1`` during the load). A hub name is looked up in the local
Hugging Face cache first and downloaded only when missing and ``offline`` is
false; without a network that attempt fails after the hub client's retries.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.embed.base import (
    Prefixes,
    import_optional,
    l2_normalize,
    prefixes_for,
    resolve_device,
    set_torch_threads,
    variant_name,
)
from rag.errors import BackendError

__all__ = ["SentenceTransformerEmbedder"]


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` for the duration of the block, then restore the previous value."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SentenceTransformerEmbedder:
    """A ``SentenceTransformer`` model; vectors normalised to unit length.

    ``name`` defaults to ``"st:" + model``. ``prefixes`` default to the rule in
    :data:`rag.embed.base.PREFIX_RULES` that matches ``model``.
    """

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        device: str = "auto",
        batch_size: int = 32,
        prefixes: Prefixes | None = None,
        threads: int | None = None,
        offline: bool = False,
    ) -> None:
        local = Path(model).expanduser()
        # Hub ids are "name" or "org/name"; anything else that is not an existing path is a path too.
        is_path = local.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
        if is_path and not local.is_dir():
            raise BackendError(f"cannot load embedding model {model!r}: no model directory at {local}")
        st = import_optional("sentence_transformers", "sentence-transformers", f"embedding model {model!r}")
        self.device = resolve_device(device)
        if self.device == "cpu":
            set_torch_threads(threads)
        default_prefixes = prefixes_for(model)
        self.prefixes = prefixes if prefixes is not None else default_prefixes
        self.name = variant_name(name or f"st:{model}", self.prefixes, default_prefixes)
        self.batch_size = batch_size
        self._model: Any
        try:
            if is_path:
                with _hub_offline():
                    self._model = st.SentenceTransformer(
                        str(local), device=self.device, local_files_only=True
                    )
            else:
                self._model = self._load_named(st, model, offline)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            hint = (
                "check the path"
                if is_path
                else "download it once on a machine with network access (it stays in the Hugging Face "
                "cache, ~/.cache/huggingface) or give the path of a local copy"
            )
            raise BackendError(
                f"cannot load embedding model {model!r}: {_first_line(exc)}", hint=hint
            ) from exc
        dim = self._model.get_embedding_dimension()
        if not dim:
            raise BackendError(f"embedding model {model!r} does not report its vector size")
        self.dim = int(dim)

    def _load_named(self, st: Any, model: str, offline: bool) -> Any:
        cls = st.SentenceTransformer
        try:
            return cls(model, device=self.device, local_files_only=True)
        except OSError:
            if offline or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
                raise
        return cls(model, device=self.device)

    def _embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            [prefix + t for t in texts],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return l2_normalize(np.asarray(vectors, dtype=np.float32))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.prefixes.query)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.prefixes.passage)
