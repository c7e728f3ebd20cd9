"""The e5-small encoder on ONNX Runtime (CPU): exported once from the torch encoder, kept in the model cache.

:func:`export_encoder` traces :class:`rag.embed.bert.BertEncoder` with
``torch.onnx.export`` (inputs ``input_ids`` and ``attention_mask``, both
``int64 (batch, tokens)``; output ``hidden``, the last hidden state) and
:func:`quantize_encoder` turns that file into one whose MatMul weights are int8
(``onnxruntime.quantization.quantize_dynamic``: weights quantised once,
activations per batch at run time). :class:`OnnxEncoder` runs either file.

Measured on e5-small (``bench/bench_embed_runtime.py``, results in
``bench/results/embed_runtime.md``).
"""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from rag.embed.base import cpu_count, import_optional
from rag.embed.models import prepare_dir

__all__ = [
    "ONNX_FORMAT",
    "QUANT_VARIANTS",
    "OnnxEncoder",
    "export_encoder",
    "feed_forward_matmuls",
    "prepare_onnx",
    "quantize_encoder",
]

ONNX_FORMAT = 1
OPSET = 17
MODEL_FILE = "model.onnx"


def export_encoder(model: Any, path: Path) -> None:
    """Write the torch encoder ``model`` as an ONNX graph with dynamic batch and token axes."""
    torch = import_optional("torch", "torch", "exporting the encoder to ONNX")
    import_optional("onnx", "onnx", "exporting the encoder to ONNX")
    ids = torch.tensor([[0, 3, 3, 2], [0, 3, 2, 1]], dtype=torch.int64)  # ids every vocabulary has
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.int64)
    axes = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter needs no onnxscript; torch flags it as legacy with a DeprecationWarning.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
            opset_version=OPSET,
            dynamo=False,
        )


#: Which MatMuls an int8 variant quantises, and how: ``int8`` all weight MatMuls, one scale per
#: matrix; ``int8-pc`` all of them, one scale per output column (per channel); ``int8-ffn`` only the
#: two feed-forward ones of each layer (~61 % of the FLOPs), the attention projections stay float32.
QUANT_VARIANTS = ("int8", "int8-pc", "int8-ffn")
_FEED_FORWARD = re.compile(r"^/layer\.\d+/(dense|output/dense_1)/MatMul$")


def feed_forward_matmuls(fp32_path: Path) -> list[str]:
    """Names of the feed-forward MatMul nodes (``/layer.N/dense`` and ``/layer.N/output/dense_1``)."""
    onnx = import_optional("onnx", "onnx", "quantising the ONNX encoder")
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and _FEED_FORWARD.match(n.name)]


def quantize_encoder(
    fp32_path: Path, int8_path: Path, *, variant: str = "int8", per_channel: bool = False
) -> None:
    """Dynamic int8 quantisation of the MatMuls of ``fp32_path`` (the embedding tables stay as they are).

    ``variant``: ``"int8"`` (every MatMul with a weight), ``"int8-pc"`` (the same, per-channel
    weight scales) or ``"int8-ffn"`` (the feed-forward MatMuls only); ``per_channel``: one weight
    scale per output column instead of one per matrix (implied by ``int8-pc``)."""
    if variant not in QUANT_VARIANTS:
        raise ValueError(f"variant must be one of {QUANT_VARIANTS}, got {variant!r}")
    import_optional("onnx", "onnx", "quantising the ONNX encoder")
    quant = import_optional("onnxruntime.quantization", "onnxruntime", "quantising the ONNX encoder")
    import logging

    nodes = feed_forward_matmuls(fp32_path) if variant == "int8-ffn" else None

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs a pre-processing suggestion on the root logger
    try:
        quant.quantize_dynamic(
            str(fp32_path),
            str(int8_path),
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            per_channel=per_channel or variant == "int8-pc",
            weight_type=quant.QuantType.QInt8,
        )
    finally:
        root.setLevel(level)


def prepare_onnx(
    cache_dir: Path, stamp: dict[str, Any], int8: bool | str, torch_model: Any
) -> tuple[Path, bool]:
    """The ONNX file for ``stamp`` (what the torch weights were converted from) in ``cache_dir``.

    ``cache_dir/e5-small-onnx/model.onnx`` (float32), or with ``int8`` (True = ``"int8"``, or a
    :data:`QUANT_VARIANTS` name) ``cache_dir/e5-small-onnx-<variant>/model.onnx``, built when
    missing or stale (``torch_model()`` gives the encoder to export). Returns
    the file and whether anything was built.
    """
    want = {**stamp, "onnx_format": ONNX_FORMAT, "opset": OPSET}

    def current(folder: Path) -> bool:
        try:
            have = json.loads((folder / "source.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (folder / MODEL_FILE).is_file() and all(have.get(k) == v for k, v in want.items())

    def build_fp32(tmp: Path) -> None:
        started = time.perf_counter()
        export_encoder(torch_model(), tmp / MODEL_FILE)
        meta = {**want, "export_s": round(time.perf_counter() - started, 2)}
        (tmp / "source.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

    fp32_dir = Path(cache_dir) / "e5-small-onnx"
    built = prepare_dir(fp32_dir, current, build_fp32)
    if not int8:
        return fp32_dir / MODEL_FILE, built

    variant = "int8" if int8 is True else str(int8)

    def build_int8(tmp: Path) -> None:
        started = time.perf_counter()
        quantize_encoder(fp32_dir / MODEL_FILE, tmp / MODEL_FILE, variant=variant)
        meta = {**want, "quantize_s": round(time.perf_counter() - started, 2)}
        (tmp / "source.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

    int8_dir = Path(cache_dir) / f"e5-small-onnx-{variant}"
    built = prepare_dir(int8_dir, current, build_int8) or built
    return int8_dir / MODEL_FILE, built


class OnnxEncoder:
    """``encoder(input_ids, attention_mask) -> hidden`` (numpy in and out) on ONNX Runtime's CPU provider."""

    def __init__(self, model: Path | bytes, *, threads: int | None = None) -> None:
        ort = import_optional("onnxruntime", "onnxruntime", "the ONNX runtime of the e5-small embedder")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_count()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = model if isinstance(model, bytes) else str(model)
        self._session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {
            "input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
            "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64),
        }
        (hidden,) = self._session.run(["hidden"], feeds)
        return np.asarray(hidden, dtype=np.float32)
