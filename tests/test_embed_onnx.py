"""e5-small on ONNX Runtime: the export matches torch, int8 stays close under its own name, files live in the model cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from rag.embed import make_embedder, resolve_runtime
from rag.embed.e5 import E5Embedder
from rag.errors import ConfigError
from tests.test_embed import TINY_TEXTS, tiny_model  # noqa: F401 (fixture)

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

Tiny = tuple[Path, dict[str, np.ndarray]]


def test_onnx_fp32_matches_torch_and_int8_stays_close(tiny_model: Tiny, tmp_path: Path) -> None:  # noqa: F811
    source = tiny_model[0]
    torch_emb = E5Embedder(source=source, cache_dir=tmp_path, device="cpu", batch_size=3)
    onnx_emb = E5Embedder(source=source, cache_dir=tmp_path, device="cpu", batch_size=3, runtime="onnx")
    int8_emb = E5Embedder(source=source, cache_dir=tmp_path, device="cpu", batch_size=3, runtime="onnx-int8")
    ref = torch_emb.embed_passages(TINY_TEXTS)
    np.testing.assert_allclose(onnx_emb.embed_passages(TINY_TEXTS), ref, atol=1e-5)
    np.testing.assert_allclose(
        onnx_emb.embed_queries(TINY_TEXTS[:2]), torch_emb.embed_queries(TINY_TEXTS[:2]), atol=1e-5
    )
    int8 = int8_emb.embed_passages(TINY_TEXTS)
    cosine = np.sum(int8 * ref, axis=1)
    assert cosine.min() > 0.95 and not np.allclose(int8, ref, atol=1e-5)
    # the same vectors keep the name (one embedding cache); int8 vectors get their own
    assert onnx_emb.name == torch_emb.name == "e5:tiny-q4" and int8_emb.name == "e5:tiny-q4+int8"
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == {
        "e5-small",
        "e5-small-onnx",
        "e5-small-onnx-int8",
    }
    assert (tmp_path / "e5-small-onnx" / "model.onnx").is_file()
    assert "onnx_export_s" in onnx_emb.load_stats
    # per-channel weight scales: int8 too, under a name and a file of their own
    pc_emb = E5Embedder(source=source, cache_dir=tmp_path, device="cpu", batch_size=3, runtime="onnx-int8-pc")
    pc = pc_emb.embed_passages(TINY_TEXTS)
    assert pc_emb.name == "e5:tiny-q4+int8pc" and np.sum(pc * ref, axis=1).min() > 0.95
    assert not np.allclose(pc, int8, atol=1e-5)
    assert (tmp_path / "e5-small-onnx-int8-pc" / "model.onnx").is_file()
    # same batches: dynamic quantisation scales activations per batch tensor, so int8 vectors
    # depend (slightly) on which texts share a batch
    again = E5Embedder(source=source, cache_dir=tmp_path, device="cpu", batch_size=3, runtime="onnx-int8")
    np.testing.assert_array_equal(again.embed_passages(TINY_TEXTS), int8)
    assert "onnx_export_s" not in again.load_stats  # exported once per model cache


def test_onnx_without_a_cache_exports_in_memory(tiny_model: Tiny) -> None:  # noqa: F811
    emb = E5Embedder(source=tiny_model[0], device="cpu", runtime="onnx")
    ref = E5Embedder(source=tiny_model[0], device="cpu")
    np.testing.assert_allclose(emb.embed_passages(TINY_TEXTS), ref.embed_passages(TINY_TEXTS), atol=1e-5)


def test_runtime_choices(tiny_model: Tiny) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="runtime"):
        E5Embedder(source=tiny_model[0], device="cpu", runtime="tensorrt")
    assert resolve_runtime("onnx", "cpu") == "onnx"
    assert resolve_runtime("auto", "cuda") == "torch"
    assert resolve_runtime("auto", "cpu") in ("torch", "onnx-int8-pc", "openvino-bf16")


def test_onnx_runtime_on_a_gpu_is_refused(tiny_model: Tiny) -> None:  # noqa: F811
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no GPU: device 'cuda' is refused earlier")
    with pytest.raises(ConfigError, match="CPU only"):
        E5Embedder(source=tiny_model[0], device="cuda", runtime="onnx")


@pytest.mark.slow
def test_real_e5_small_on_onnx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_MODEL_DIR", str(tmp_path))
    texts = ["怎样用 docker 在 GPU 上启动 ollama？", "Ollama listens on port 11434 by default."]
    ref = make_embedder("e5-small", device="cpu", runtime="torch").embed_passages(texts)
    fp32 = make_embedder("e5-small", device="cpu", runtime="onnx").embed_passages(texts)
    int8 = make_embedder("e5-small", device="cpu", runtime="onnx-int8").embed_passages(texts)
    pc = make_embedder("e5-small", device="cpu", runtime="onnx-int8-pc").embed_passages(texts)
    assert np.sum(fp32 * ref, axis=1).min() > 0.99999
    assert np.sum(int8 * ref, axis=1).min() > 0.97
    assert np.sum(pc * ref, axis=1).min() > 0.99
    if importlib.util.find_spec("openvino") is not None:
        ov32 = make_embedder("e5-small", device="cpu", runtime="openvino").embed_passages(texts)
        bf16 = make_embedder("e5-small", device="cpu", runtime="openvino-bf16").embed_passages(texts)
        assert np.sum(ov32 * ref, axis=1).min() > 0.99999
        assert np.sum(bf16 * ref, axis=1).min() > 0.9995


def test_auto_falls_back_to_torch_without_the_onnx_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import rag.embed as embed

    monkeypatch.setattr(embed, "AUTO_CPU_RUNTIME", "onnx-int8")
    monkeypatch.setattr(embed, "cpu_has_bf16", lambda: False)
    assert resolve_runtime("auto", "cpu") == "onnx-int8"
    monkeypatch.setattr(embed, "onnx_available", lambda: False)
    assert resolve_runtime("auto", "cpu") == "torch"
    assert resolve_runtime("onnx-int8", "cpu") == "onnx-int8"  # an explicit choice is kept


def test_int8_queries_never_take_the_float32_numpy_path(tiny_model: Tiny, tmp_path: Path) -> None:  # noqa: F811
    fp32 = E5Embedder(
        source=tiny_model[0], cache_dir=tmp_path, device="cpu", runtime="onnx", numpy_queries=True
    )
    int8 = E5Embedder(
        source=tiny_model[0], cache_dir=tmp_path, device="cpu", runtime="onnx-int8", numpy_queries=True
    )
    pc = E5Embedder(
        source=tiny_model[0], cache_dir=tmp_path, device="cpu", runtime="onnx-int8-pc", numpy_queries=True
    )
    assert fp32.numpy_queries and not int8.numpy_queries and not pc.numpy_queries
    one = int8.embed_queries(["猫"])
    np.testing.assert_array_equal(one, int8.embed_queries(["猫"]))


def test_auto_takes_openvino_bf16_only_where_it_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import rag.embed as embed
    import rag.embed.openvino as ov_mod

    monkeypatch.setattr(ov_mod, "openvino_available", lambda: True)
    monkeypatch.setattr(embed, "cpu_has_bf16", lambda: True)
    assert resolve_runtime("auto", "cpu") == "openvino-bf16"
    assert resolve_runtime("auto", "cuda") == "torch"
    assert resolve_runtime("onnx", "cpu") == "onnx"  # an explicit choice is kept
    monkeypatch.setattr(embed, "cpu_has_bf16", lambda: False)  # no native bfloat16: ONNX Runtime
    assert resolve_runtime("auto", "cpu") == embed.AUTO_CPU_RUNTIME == "onnx-int8-pc"
    monkeypatch.setattr(embed, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(ov_mod, "openvino_available", lambda: False)  # the extra is not installed
    assert resolve_runtime("auto", "cpu") == "onnx-int8-pc"


def test_openvino_f32_matches_onnx_and_bf16_stays_close(tiny_model: Tiny, tmp_path: Path) -> None:  # noqa: F811
    pytest.importorskip("openvino")
    source = tiny_model[0]
    onnx_emb = E5Embedder(source=source, cache_dir=tmp_path, device="cpu", batch_size=3, runtime="onnx")
    f32 = E5Embedder(source=source, cache_dir=tmp_path, device="cpu", batch_size=3, runtime="openvino")
    bf16 = E5Embedder(source=source, cache_dir=tmp_path, device="cpu", batch_size=3, runtime="openvino-bf16")
    ref = onnx_emb.embed_passages(TINY_TEXTS)
    # float32 in another library's kernels: the same vectors up to rounding
    np.testing.assert_allclose(f32.embed_passages(TINY_TEXTS), ref, atol=1e-3)
    assert np.sum(f32.embed_passages(TINY_TEXTS) * ref, axis=1).min() > 0.99999
    assert np.sum(bf16.embed_passages(TINY_TEXTS) * ref, axis=1).min() > 0.999
    # float32 keeps the name (the same vectors, one embedding cache); bfloat16 gets its own
    assert f32.name == onnx_emb.name == "e5:tiny-q4" and bf16.name == "e5:tiny-q4+bf16"
    # both read the one float32 export in the model cache; OpenVINO keeps its compiled models beside it
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == {
        "e5-small",
        "e5-small-onnx",
        "e5-small-openvino",
    }
    assert any((tmp_path / "e5-small-openvino").iterdir())
    again = E5Embedder(source=source, cache_dir=tmp_path, device="cpu", batch_size=3, runtime="openvino-bf16")
    np.testing.assert_allclose(again.embed_passages(TINY_TEXTS), bf16.embed_passages(TINY_TEXTS), atol=1e-6)
    # without a model cache the export goes through a temporary folder
    mem = E5Embedder(source=source, device="cpu", batch_size=3, runtime="openvino")
    np.testing.assert_allclose(mem.embed_passages(TINY_TEXTS), ref, atol=1e-3)


def test_openvino_runs_from_several_threads(tiny_model: Tiny, tmp_path: Path) -> None:  # noqa: F811
    pytest.importorskip("openvino")
    from concurrent.futures import ThreadPoolExecutor

    emb = E5Embedder(source=tiny_model[0], cache_dir=tmp_path, device="cpu", runtime="openvino")
    want = emb.embed_passages(TINY_TEXTS)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: emb.embed_passages(TINY_TEXTS), range(8)))
    for vecs in got:
        np.testing.assert_allclose(vecs, want, atol=1e-6)


def test_selective_int8_quantises_only_the_feed_forward_matmuls(tiny_model: Tiny, tmp_path: Path) -> None:  # noqa: F811
    import onnx

    from rag.embed.onnx import feed_forward_matmuls, quantize_encoder

    E5Embedder(source=tiny_model[0], cache_dir=tmp_path, device="cpu", runtime="onnx").embed_passages(["x"])
    fp32 = tmp_path / "e5-small-onnx" / "model.onnx"
    ffn = feed_forward_matmuls(fp32)
    layers = len({name.split("/")[1] for name in ffn})
    assert layers >= 1 and len(ffn) == 2 * layers
    quantize_encoder(fp32, tmp_path / "ffn.onnx", variant="int8-ffn")
    nodes = onnx.load(str(tmp_path / "ffn.onnx")).graph.node
    integer = [n for n in nodes if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    float_weights = [n for n in nodes if n.op_type == "MatMul" and "query" in n.name]
    assert len(integer) == len(ffn) and float_weights


def test_batch_runtimes_read_no_torch_weights_once_exported(tiny_model: Tiny, tmp_path: Path) -> None:  # noqa: F811
    source = tiny_model[0]
    first = E5Embedder(source=source, cache_dir=tmp_path, device="cpu", runtime="onnx")
    assert first._state == {}  # not read at load ...
    want = first.embed_passages(TINY_TEXTS)  # ... but for the export, then freed
    assert first._state == {} and "onnx_export_s" in first.load_stats
    later = E5Embedder(source=source, cache_dir=tmp_path, device="cpu", runtime="onnx")
    np.testing.assert_allclose(later.embed_passages(TINY_TEXTS), want, atol=1e-6)
    assert later._state == {} and "onnx_export_s" not in later.load_stats
    # the numpy query path needs the weights: read at load
    numpy = E5Embedder(source=source, cache_dir=tmp_path, device="cpu", runtime="onnx", numpy_queries=True)
    assert numpy._state and numpy._np_state is not None
    np.testing.assert_allclose(numpy.embed_queries(["猫"]), later.embed_queries(["猫"]), atol=1e-5)


def test_openvino_with_a_read_only_model_cache_compiles_each_time(
    tiny_model: Tiny,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("openvino")
    import rag.embed.openvino as ov_mod

    want = E5Embedder(source=tiny_model[0], cache_dir=tmp_path, device="cpu", runtime="onnx").embed_passages(
        TINY_TEXTS
    )
    # an image's model cache: the export is there, nothing new may be written
    monkeypatch.setattr(ov_mod, "_writable", lambda folder: False)
    emb = E5Embedder(source=tiny_model[0], cache_dir=tmp_path, device="cpu", runtime="openvino")
    np.testing.assert_allclose(emb.embed_passages(TINY_TEXTS), want, atol=1e-3)
    assert not (tmp_path / "e5-small-openvino").exists()
