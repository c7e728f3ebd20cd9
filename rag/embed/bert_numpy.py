"""The BERT encoder of :mod:`rag.embed.bert` in numpy, for a few short texts on the CPU.

A single query is ~20 tokens: the whole forward pass is ~0.4 GFLOP, a few
milliseconds of BLAS. Running it in numpy lets `rag search` embed its query
without importing torch, which alone costs 1.5-2.3 s of a cold start on the
2-core development machine; batches of passages still go through torch.
Same parameter names and the same arithmetic as :class:`rag.embed.bert.BertEncoder`
(``tests/test_embed_bert.py`` checks they agree).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

WORD = "embeddings.word_embeddings.weight"


def prepare_state(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """float32 copies of every weight except the word table (kept as stored: rows are gathered);
    linear layers' weights transposed once to contiguous ``(in, out)`` so each product is one BLAS call."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        arr = np.asarray(value)
        if key == WORD:
            out[key] = arr
        elif key.startswith("encoder.") and key.endswith(".weight") and arr.ndim == 2:
            out[key] = np.ascontiguousarray(arr.astype(np.float32).T)
        else:
            out[key] = arr.astype(np.float32)
    return out


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # exact (erf) GELU, as BERT's "gelu"

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def encode(
    state: Mapping[str, np.ndarray], config: Mapping[str, Any], ids: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Last hidden state ``(batch, tokens, hidden)`` for ``ids``/``mask`` of shape ``(batch, tokens)``."""
    s = state
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    d = hidden // heads
    eps = float(config.get("layer_norm_eps", 1e-12))
    b, n = ids.shape
    x = s[WORD][ids].astype(np.float32)
    x = x + s["embeddings.position_embeddings.weight"][:n] + s["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, s["embeddings.LayerNorm.weight"], s["embeddings.LayerNorm.bias"], eps)
    drop = np.where(mask[:, None, None, :].astype(bool), 0.0, np.finfo(np.float32).min).astype(np.float32)
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."

        def lin(name: str, v: np.ndarray, p: str = p) -> np.ndarray:
            w = s[p + name + ".weight"]  # (in, out), see prepare_state
            return (v.reshape(-1, w.shape[0]) @ w).reshape(b, n, w.shape[1]) + s[p + name + ".bias"]

        def split(t: np.ndarray) -> np.ndarray:
            return t.reshape(b, n, heads, d).transpose(0, 2, 1, 3)

        q = split(lin("attention.self.query", x))
        k = split(lin("attention.self.key", x))
        v = split(lin("attention.self.value", x))
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(d)) + drop
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        ctx = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        ctx = ctx.transpose(0, 2, 1, 3).reshape(b, n, hidden)
        x = _layer_norm(
            lin("attention.output.dense", ctx) + x,
            s[p + "attention.output.LayerNorm.weight"],
            s[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        inner = _gelu(lin("intermediate.dense", x))
        x = _layer_norm(
            lin("output.dense", inner) + x,
            s[p + "output.LayerNorm.weight"],
            s[p + "output.LayerNorm.bias"],
            eps,
        )
    return x.astype(np.float32)
