"""The e5-small encoder on OpenVINO's CPU plugin, from the same ONNX file as :mod:`rag.embed.onnx`.

OpenVINO reads the float32 ONNX export (no ``onnx`` package needed to read it)
and compiles it for the CPU. With ``precision="bf16"`` the plugin computes in
bfloat16 (float32 accumulation) where the CPU does so natively (AVX512_BF16 or
AMX: AMD Zen 4 and later, Intel Cooper Lake / Sapphire Rapids and later): about
twice the multiply-adds per instruction of float32, vectors within ~1e-5 cosine
of float32 on e5-small. ``precision="f32"`` keeps float32 throughout (the same
vectors as ONNX Runtime to ~1e-7).

Measured on e5-small (``bench/bench_embed_runtime.py``, results in
``bench/results/embed_runtime.md``). Optional: ``pip install 'rag-notes[openvino]'``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from rag.embed.base import cpu_count, import_optional

__all__ = ["OpenVinoEncoder", "bf16_supported", "openvino_available"]

PRECISIONS = ("f32", "bf16")


def openvino_available() -> bool:
    """Whether ``openvino`` is installed (``pip install 'rag-notes[openvino]'``), checked without importing it."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


@functools.cache
def bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin computes in bfloat16 natively on this machine."""
    if not openvino_available():
        return False
    ov = import_optional("openvino", "openvino", "the OpenVINO runtime of the e5-small embedder")
    try:
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no CPU plugin: nothing it could run either
        return False
    return "BF16" in caps


class OpenVinoEncoder:
    """``encoder(input_ids, attention_mask) -> hidden`` (numpy in and out) on OpenVINO's CPU plugin.

    Thread-safe: each call runs its own infer request on the one compiled model.
    """

    def __init__(
        self,
        model: Path,
        *,
        precision: str = "f32",
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        """``cache_dir``: where OpenVINO keeps the compiled model (keyed by the file, the settings and
        its own version); a process that finds it there loads it in ~0.5 s instead of compiling
        the ONNX file (~2-3 s on 2 cores)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        ov = import_optional("openvino", "openvino", "the OpenVINO runtime of the e5-small embedder")
        core = ov.Core()
        if cache_dir is not None and _writable(Path(cache_dir)):  # a read-only model cache: compile each time
            core.set_property({"CACHE_DIR": str(cache_dir)})
        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": threads or cpu_count(),
            "PERFORMANCE_HINT": "LATENCY",
        }
        # from the path, so that a cached compiled model is found without reading the ONNX file
        self._compiled: Any = core.compile_model(str(model), "CPU", config)
        self.precision = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        request = self._compiled.create_infer_request()
        result = request.infer(
            {
                "input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64),
            }
        )
        # the request owns the output buffer: copy it out before the request goes
        return np.array(result[0], dtype=np.float32, copy=True)


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)
