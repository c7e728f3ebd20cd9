"""The per-user model cache: one converted copy per machine, shared by every data dir, built atomically once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rag.embed import EmbeddingCache, make_embedder
from rag.embed.e5 import E5Embedder
from rag.embed.models import model_cache_dir, prepare_dir
from tests.test_embed import TINY_TEXTS, tiny_model  # noqa: F401 (fixture)

WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".bin", ".pt", ".pth", ".gguf", ".model", ".ckpt", ".h5")


def model_files(root: Path) -> list[Path]:
    """Files under ``root`` that look like model weights: named like them, or over 1 MB."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and (p.name.endswith(WEIGHT_SUFFIXES) or p.stat().st_size > 1_000_000)
    ]


def test_model_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAG_MODEL_DIR", str(tmp_path / "models"))
    assert model_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("RAG_MODEL_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache_dir() == tmp_path / "xdg" / "rag-notes" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_cache_dir() == tmp_path / "home" / ".cache" / "rag-notes" / "models"


def test_concurrent_preparers_build_once_and_readers_never_see_a_partial_folder(tmp_path: Path) -> None:
    out = tmp_path / "cache" / "m"
    builds: list[int] = []
    seen: list[set[str]] = []

    def current(d: Path) -> bool:
        return (d / "done").is_file()

    def build(tmp: Path) -> None:
        builds.append(threading.get_ident())
        (tmp / "weights.bin").write_bytes(b"w" * 1000)
        time.sleep(0.3)  # a slow conversion: every other thread arrives meanwhile
        (tmp / "done").write_text("ok")

    def reader() -> None:
        for _ in range(50):
            if out.exists():
                seen.append({p.name for p in out.iterdir()})
            time.sleep(0.01)

    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(prepare_dir(out, current, build))) for _ in range(6)
    ]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and sorted(results) == [False] * 5 + [True]
    assert all(names == {"weights.bin", "done"} for names in seen)
    assert sorted(p.name for p in out.parent.iterdir()) == [".m.lock", "m"]  # no temp folder left


def test_a_stale_folder_is_replaced_and_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "old.bin").write_bytes(b"old")

    def build(tmp: Path) -> None:
        (tmp / "new.bin").write_bytes(b"new")

    assert prepare_dir(out, lambda d: (d / "new.bin").is_file(), build)
    assert [p.name for p in out.iterdir()] == ["new.bin"]

    def broken(tmp: Path) -> None:
        (tmp / "partial.bin").write_bytes(b"x")
        raise OSError("disk full")

    other = tmp_path / "n"
    with pytest.raises(OSError, match="disk full"):
        prepare_dir(other, lambda d: False, broken)
    assert not other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", ".n.lock", "m"]


def test_tiny_model_is_converted_once_for_two_data_dirs(
    tiny_model: tuple[Path, dict[str, np.ndarray]],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAG_MODEL_DIR", str(tmp_path / "models"))
    vectors = []
    for name in ("data1", "data2"):
        emb = E5Embedder(source=tiny_model[0], cache_dir=model_cache_dir(), device="cpu")
        assert ("convert_s" in emb.load_stats) == (name == "data1")
        with EmbeddingCache(tmp_path / name / "dense" / "embedding-cache.sqlite3") as cache:
            vectors.append(cache.embed_passages(emb, TINY_TEXTS))
    np.testing.assert_array_equal(vectors[0], vectors[1])
    assert sorted(p.name for p in model_files(tmp_path / "models")) == [
        "model.safetensors",
        "sentencepiece.model",
    ]
    assert model_files(tmp_path / "data1") == [] and model_files(tmp_path / "data2") == []


@pytest.mark.slow
def test_e5_small_weights_go_to_the_user_cache_not_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real model through the factory, as ingest builds it: no model-sized file in either data dir."""
    monkeypatch.setenv("RAG_MODEL_DIR", str(tmp_path / "cache"))
    texts = ["passage one about docker", "第二段：用 GPU 启动 ollama"]
    stats = []
    for name in ("data1", "data2"):
        emb = make_embedder("e5-small", device="cpu")
        assert isinstance(emb, E5Embedder)
        stats.append(emb.load_stats)
        with EmbeddingCache(tmp_path / name / "dense" / "embedding-cache.sqlite3") as cache:
            assert cache.embed_passages(emb, texts).shape == (2, 384)
    assert "convert_s" in stats[0] and "convert_s" not in stats[1]
    cached = model_files(tmp_path / "cache")
    assert {p.name for p in cached} >= {"model.safetensors"}
    assert sum(p.stat().st_size for p in cached) > 50_000_000
    assert model_files(tmp_path / "data1") == [] and model_files(tmp_path / "data2") == []


@pytest.mark.slow
def test_dense_leg_writes_no_model_into_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.retrieval.legs import dense_leg
    from rag.settings import EmbeddingSettings, VectorSettings

    monkeypatch.setenv("RAG_MODEL_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    embedding = EmbeddingSettings.model_validate({"model": "e5-small", "device": "cpu"})
    leg = dense_leg(data, embedding, VectorSettings.model_validate({}))
    try:
        assert leg is not None
    finally:
        leg.close()
    assert not [p for p in data.rglob("*") if p.name.endswith(WEIGHT_SUFFIXES)]
    assert not (data / "models").exists()
    assert os.path.isdir(tmp_path / "cache" / "e5-small")
