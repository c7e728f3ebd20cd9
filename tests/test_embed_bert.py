"""The plain-torch BERT encoder computes what transformers' BertModel computes on the same weights."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rag.embed.bert import BertEncoder  # noqa: E402

CONFIG = {
    "vocab_size": 97,
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 40,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_matches_transformers_bert_on_padded_batches(attn: str) -> None:
    torch.manual_seed(0)
    reference = transformers.BertModel(
        transformers.BertConfig(**CONFIG, attn_implementation=attn), add_pooling_layer=False
    ).eval()
    ours = BertEncoder(CONFIG)
    state = {
        k: v for k, v in reference.state_dict().items() if not k.endswith(("position_ids", "token_type_ids"))
    }
    missing, unexpected = ours.load_state_dict(state, strict=True, assign=True)
    assert not missing and not unexpected
    ids = torch.randint(3, CONFIG["vocab_size"], (3, 17))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # padded rows
    mask[2, 4:] = 0
    with torch.inference_mode():
        want = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours.eval()(ids, mask)
    keep = mask.bool()
    assert got.shape == want.shape
    assert torch.allclose(got[keep], want[keep], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got[keep], embeddings_only(ours, ids)[keep], atol=1e-3)


def embeddings_only(model: BertEncoder, ids: torch.Tensor) -> torch.Tensor:
    """The embedding layer's output alone: a wrong answer the encoder must not equal."""
    with torch.inference_mode():
        return model.embeddings(ids)


def test_rejects_configs_it_does_not_implement() -> None:
    with pytest.raises(ValueError, match="activation"):
        BertEncoder({**CONFIG, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="multiple"):
        BertEncoder({**CONFIG, "num_attention_heads": 5})


def test_numpy_forward_matches_the_torch_encoder() -> None:
    import numpy as np

    from rag.embed.bert_numpy import encode, prepare_state

    torch.manual_seed(1)
    reference = transformers.BertModel(transformers.BertConfig(**CONFIG), add_pooling_layer=False).eval()
    state = {
        k: v for k, v in reference.state_dict().items() if not k.endswith(("position_ids", "token_type_ids"))
    }
    ours = BertEncoder(CONFIG)
    ours.load_state_dict(state, strict=True, assign=True)
    ids = torch.randint(3, CONFIG["vocab_size"], (2, 11))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.inference_mode():
        want = ours.eval()(ids, mask).numpy()
    got = encode(prepare_state({k: v.numpy() for k, v in state.items()}), CONFIG, ids.numpy(), mask.numpy())
    keep = mask.numpy().astype(bool)
    assert got.shape == want.shape
    np.testing.assert_allclose(got[keep], want[keep], atol=2e-5, rtol=1e-4)
