"""A BERT encoder in plain torch, for the e5-small weights.

Why not ``transformers.BertModel``: importing transformers' BERT module costs
~4.6 s on the 2-core development machine (it pulls in torch._dynamo, the
distributed tensor code and hub kernels), more than the whole cold-start budget
of `rag search`; this module needs only ``torch`` and computes the same thing
(``tests/test_embed_bert.py`` checks it against ``transformers.BertModel`` on
the same weights). Parameter names follow transformers' BERT state dict, so the
converted checkpoint loads unchanged.

The encoder (Devlin et al., "BERT", NAACL 2019; post-LayerNorm):
``x = LN(word[ids] + pos[0..L) + type[0])``, then per layer
``x = LN(x + W_o · softmax(QKᵀ/√d + mask) V)`` and
``x = LN(x + W_2 · gelu(W_1 x))`` with the exact (erf) GELU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def _param(*shape: int) -> nn.Parameter:
    # Uninitialised: every parameter is replaced by a loaded weight (load_state_dict(assign=True)).
    # nn.Linear/nn.Embedding would run their random init, whose lazy imports alone cost ~2 s.
    return nn.Parameter(torch.empty(*shape, device="meta"), requires_grad=False)


class _Linear(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = _param(n_out, n_in)
        self.bias = _param(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class _LayerNorm(nn.Module):
    def __init__(self, n: int, eps: float) -> None:
        super().__init__()
        self.weight = _param(n)
        self.bias = _param(n)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class _Table(nn.Module):
    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.weight = _param(rows, dim)


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.query = _Linear(hidden, hidden)
        self.key = _Linear(hidden, hidden)
        self.value = _Linear(hidden, hidden)


class _Dense(nn.Module):
    """``dense`` followed by a residual ``LayerNorm`` (the ``*.output`` blocks)."""

    def __init__(self, n_in: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = _Linear(n_in, hidden)
        self.LayerNorm = _LayerNorm(hidden, eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, hidden: int, eps: float) -> None:
        super().__init__()
        self.self = _SelfAttention(hidden)
        self.output = _Dense(hidden, hidden, eps)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.dense = _Linear(hidden, inner)


class _Layer(nn.Module):
    def __init__(self, hidden: int, inner: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention = _Attention(hidden, eps)
        self.intermediate = _Intermediate(hidden, inner)
        self.output = _Dense(inner, hidden, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        sa = self.attention.self

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, h // self.heads).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(split(sa.query(x)), split(sa.key(x)), split(sa.value(x)), mask)
        x = self.attention.output(ctx.transpose(1, 2).reshape(b, n, h), x)
        return self.output(F.gelu(self.intermediate.dense(x)), x)


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, positions: int, types: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = _Table(vocab, hidden)
        self.position_embeddings = _Table(positions, hidden)
        self.token_type_embeddings = _Table(types, hidden)
        self.LayerNorm = _LayerNorm(hidden, eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        dtype = self.position_embeddings.weight.dtype
        # the word table may be stored in float16 to halve its memory; compute in the model's dtype
        x = F.embedding(ids, self.word_embeddings.weight).to(dtype)
        x = x + self.position_embeddings.weight[: ids.shape[1]] + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, inner: int, heads: int, eps: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(hidden, inner, heads, eps) for _ in range(layers))


class BertEncoder(nn.Module):
    """``forward(input_ids, attention_mask) -> last hidden state (batch, tokens, hidden)``.

    Built without storage (meta tensors); give it weights with
    ``load_state_dict(state, assign=True)`` before use."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        if hidden % heads:
            raise ValueError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported activation {config.get('hidden_act')!r} (only 'gelu')")
        eps = float(config.get("layer_norm_eps", 1e-12))
        self.embeddings = _Embeddings(
            int(config["vocab_size"]),
            hidden,
            int(config["max_position_embeddings"]),
            int(config.get("type_vocab_size", 2)),
            eps,
        )
        self.encoder = _Encoder(
            int(config["num_hidden_layers"]), hidden, int(config["intermediate_size"]), heads, eps
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        # additive mask over keys, broadcast over heads and queries: 0 keep, -inf-like drop
        keep = attention_mask[:, None, None, :].to(torch.bool)
        mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(
            ~keep, torch.finfo(x.dtype).min
        )
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x
