"""BMX index: golden scores on a hand-checked corpus, updates, persistence."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

import rag.sparse.bmx as bmx
from rag.errors import InputError, StoreError
from rag.sparse.bmx import (
    BMXIndex,
    bmx_default_alpha,
    bmx_default_beta,
    bmx_entropy_terms,
    bmx_idf,
    bmx_normalizer,
    bmx_query_entropies,
)

# The tiny corpus below, scored by hand with the BMX formula (arXiv:2408.06643, eq. 1-6,
# as in baguetter 0.1.1):
#   d1 = [a, b] (|D| = 2), d2 = [b, c, c] (|D| = 3), d3 = [d] (|D| = 1)
#   N = 3, avgdl = 2, alpha = clip(2/100, 0.5, 1.5) = 0.5, beta = 1/ln(1+3) = 0.7213475204444817
#   IDF(b) = ln(1 + (3-2+0.5)/(2+0.5)) = ln(1.6)  = 0.47000362924573563
#   IDF(c) = ln(1 + (3-1+0.5)/(1+0.5)) = ln(8/3)  = 0.9808292530117263
#   h(tf) = -p ln p, p = 1/(1+e^-tf):  h(1) = 0.22901264401630872, h(2) = 0.11179782124019468
#   E(b) = h(1) + h(1) = 0.45802528803261744 (tf 1 in d1 and d2);  E(c) = h(2)
# Query [b, c] (m = 2): E~(b) = 1, E~(c) = h(2)/E(b) = 0.2440865693691419,
#   E_avg = (1 + 0.2440865693691419)/2 = 0.6220432846845709
#   d1: IDF(b)*1*1.5/(1 + 0.5*2/2 + 0.5*E_avg) + beta*E~(b)*(1/2)               = 0.749959800424822
#   d2: IDF(b)*1*1.5/(1 + 0.5*3/2 + 0.5*E_avg) + IDF(c)*2*1.5/(2 + 0.5*3/2 + 0.5*E_avg)
#       + beta*(E~(b) + E~(c))*(2/2)                                              = 2.200761134683193
#   d3 holds no query token: never returned.
# normalize_scores divides by m*ln(1 + (N-0.5)/1.5) = 2*ln(8/3) = 1.9616585060234526:
#   d2 -> 1.1218879983063075, d1 -> 0.3823090502867862
# Query [b, b] (repeats count, m = 2, E~ = 1 for both, E_avg = 1, S(d1) = S(d2) = 2/2):
#   d1: 2*IDF(b)*1.5/(1 + 0.5*1 + 0.5*1) + beta*2 = 2.147700484757567
#   d2: 2*IDF(b)*1.5/(1 + 0.5*1.5 + 0.5*1) + beta*2 = 2.0693665465499445
# Query [c] with alpha = 1, beta = 0 (plain BM25-like part): d2 = IDF(c)*2*2/(2 + 1*1.5 + 1*1) = 0.8718482249
TINY = {"d1": ["a", "b"], "d2": ["b", "c", "c"], "d3": ["d"]}


def tiny(**kwargs: object) -> BMXIndex:
    index = BMXIndex(**kwargs)  # type: ignore[arg-type]
    index.upsert(list(TINY), list(TINY.values()))
    return index


def assert_hits(got: list[tuple[str, float]], want: list[tuple[str, float]], tol: float = 1e-12) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, g), (_, w) in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=tol, abs=tol)


# ----------------------------------------------------------------------------- pure functions


def test_pure_functions_golden() -> None:
    assert bmx_idf(3, [2, 1]).tolist() == pytest.approx([0.47000362924573563, 0.9808292530117263], rel=1e-15)
    assert bmx_entropy_terms([1, 2]).tolist() == pytest.approx([0.22901264401630872, 0.11179782124019468])
    assert bmx_default_alpha(2.0) == 0.5
    assert bmx_default_alpha(120.0) == pytest.approx(1.2)
    assert bmx_default_alpha(1000.0) == 1.5
    assert bmx_default_beta(3) == pytest.approx(0.7213475204444817, rel=1e-15)
    assert bmx_normalizer(2, 3) == pytest.approx(1.9616585060234526, rel=1e-15)
    norm, avg = bmx_query_entropies([0.45802528803261744, 0.11179782124019468])
    assert norm.tolist() == pytest.approx([1.0, 0.2440865693691419], rel=1e-15)
    assert avg == pytest.approx(0.6220432846845709, rel=1e-15)
    zero, zero_avg = bmx_query_entropies([0.0, 0.0])
    assert zero.tolist() == [0.0, 0.0] and zero_avg == 0.0


# ----------------------------------------------------------------------------- golden search


def test_golden_scores() -> None:
    index = tiny()
    assert_hits(index.search(["b", "c"], 10), [("d2", 2.200761134683193), ("d1", 0.749959800424822)])


def test_golden_repeated_query_tokens() -> None:
    assert_hits(tiny().search(["b", "b"], 10), [("d1", 2.147700484757567), ("d2", 2.0693665465499445)])


def test_golden_normalized_scores() -> None:
    index = tiny(normalize_scores=True)
    assert_hits(index.search(["b", "c"], 10), [("d2", 1.1218879983063075), ("d1", 0.3823090502867862)])


def test_explicit_alpha_beta() -> None:
    index = tiny(alpha=1.0, beta=0.0)
    assert_hits(index.search(["c"], 10), [("d2", 0.9808292530117263 * 4 / 4.5)])


def test_unknown_tokens_are_ignored() -> None:
    index = tiny()
    assert index.search(["zzz", "yyy"], 10) == []
    assert index.search([], 10) == []
    # an unknown token does not count in m: same scores as the known tokens alone
    assert_hits(index.search(["b", "zzz", "c"], 10), index.search(["b", "c"], 10))


def test_no_zero_score_hits_and_k() -> None:
    index = tiny()
    hits = index.search(["b", "c"], 100)
    assert {i for i, _ in hits} == {"d1", "d2"}
    assert all(score > 0 for _, score in hits)
    assert [i for i, _ in index.search(["b", "c"], 1)] == ["d2"]
    assert index.search(["b"], 0) == []
    with pytest.raises(InputError):
        index.search(["b"], -1)
    with pytest.raises(InputError):
        index.search("b c", 3)  # type: ignore[arg-type]


def test_ties_rank_by_insertion_order() -> None:
    index = BMXIndex()
    index.upsert(["x", "y", "z"], [["t", "u"], ["t", "u"], ["t", "u"]])
    hits = index.search(["t"], 2)
    assert [i for i, _ in hits] == ["x", "y"]
    assert hits[0][1] == hits[1][1]
    index.upsert(["x"], [["t", "u"]])  # an upsert moves "x" to the end
    assert [i for i, _ in index.search(["t"], 3)] == ["y", "z", "x"]
    assert index.ids() == ["y", "z", "x"]


def test_search_many_matches_search() -> None:
    index = tiny()
    queries = [["b", "c"], ["zzz"], ["d"], ["a", "a", "b"]]
    assert index.search_many(queries, 5) == [index.search(q, 5) for q in queries]


# ----------------------------------------------------------------------------- updates


def test_delete_removes() -> None:
    index = tiny()
    assert index.delete(["d2", "nope", "d2"]) == 1
    assert len(index) == 2 and "d2" not in index and "d1" in index
    assert index.search(["c"], 10) == []
    fresh = BMXIndex()
    fresh.upsert(["d1", "d3"], [TINY["d1"], TINY["d3"]])
    assert_hits(index.search(["b", "a"], 10), fresh.search(["b", "a"], 10))
    assert index.delete(["d1", "d3"]) == 2
    assert len(index) == 0 and index.search(["a"], 10) == [] and index.ids() == []


def test_upsert_replaces() -> None:
    index = tiny()
    index.upsert(["d1"], [["c", "e"]])
    assert len(index) == 3
    assert index.search(["a"], 10) == []
    fresh = BMXIndex()
    fresh.upsert(["d2", "d3", "d1"], [TINY["d2"], TINY["d3"], ["c", "e"]])
    for q in (["c"], ["e", "b"], ["b", "c", "d"]):
        assert_hits(index.search(q, 10), fresh.search(q, 10))


def test_upsert_input_errors_leave_index_unchanged() -> None:
    index = tiny()
    with pytest.raises(InputError):
        index.upsert(["d1"], [])
    with pytest.raises(InputError):
        index.upsert(["d1"], ["a b"])  # type: ignore[list-item]
    with pytest.raises(InputError):
        index.upsert(["d1"], [["a", 3]])  # type: ignore[list-item]
    assert len(index) == 3
    assert_hits(index.search(["b", "c"], 10), [("d2", 2.200761134683193), ("d1", 0.749959800424822)])


def test_empty_documents_count_in_n_and_avgdl() -> None:
    index = BMXIndex()
    index.upsert(["e", "f"], [[], ["a"]])
    # N = 2, avgdl = 0.5, alpha = 0.5, beta = 1/ln 3; one token with E~ = 1, E_avg = 1, S = 1
    idf = math.log(1 + 1.5 / 1.5)
    want = idf * 1.5 / (1 + 0.5 * 2 + 0.5) + 1 / math.log(3)
    assert_hits(index.search(["a"], 5), [("f", want)])


def random_corpus(rng: random.Random, n: int, vocab: int) -> dict[str, list[str]]:
    words = [f"w{i}" for i in range(vocab)] + [f"词{i}" for i in range(vocab // 2)]
    weights = [1.0 / (r + 1) for r in range(len(words))]
    return {f"doc{i}": rng.choices(words, weights, k=rng.randint(0, 30)) for i in range(n)}


@pytest.mark.parametrize("small_thresholds", [False, True])
def test_incremental_equals_fresh_build(monkeypatch: pytest.MonkeyPatch, small_thresholds: bool) -> None:
    if small_thresholds:  # force frequent delta merges and compactions
        monkeypatch.setattr(bmx, "_DELTA_MIN_POSTINGS", 50)
        monkeypatch.setattr(bmx, "_DEAD_MIN", 5)
    rng = random.Random(7)
    corpus = random_corpus(rng, 300, 80)
    index = BMXIndex()
    index.upsert(list(corpus)[:200], [corpus[i] for i in list(corpus)[:200]])
    live = dict(list(corpus.items())[:200])
    pending = list(corpus)[200:]
    for step in range(400):
        op = rng.random()
        if op < 0.4 and pending:
            doc_id = pending.pop()
            index.upsert([doc_id], [corpus[doc_id]])
            live[doc_id] = corpus[doc_id]
        elif op < 0.7 and live:
            doc_id = rng.choice(sorted(live))
            new_doc = random_corpus(rng, 1, 80)["doc0"]
            index.upsert([doc_id], [new_doc])
            live.pop(doc_id)
            live[doc_id] = new_doc
        elif live:
            victims = rng.sample(sorted(live), min(len(live), rng.randint(1, 3)))
            assert index.delete(victims) == len(victims)
            for v in victims:
                live.pop(v)
        if step % 100 == 99:
            index.upsert([f"batch{step}-{j}" for j in range(20)], [corpus[f"doc{j}"] for j in range(20)])
            live.update({f"batch{step}-{j}": corpus[f"doc{j}"] for j in range(20)})
    assert sorted(index.ids()) == sorted(live) and len(index) == len(live)
    fresh = BMXIndex()
    fresh.upsert(index.ids(), [live[i] for i in index.ids()])
    queries = [random_corpus(rng, 1, 80)["doc0"][:5] for _ in range(60)] + [["w0"], ["w1", "w0"]]
    for q in queries:
        assert_hits(index.search(q, 15), fresh.search(q, 15), tol=1e-9)


# ----------------------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path: Path) -> None:
    index = tiny(alpha=0.8, beta=0.05, normalize_scores=True)
    index.upsert(["d4"], [["c", "x", "y"]])  # stays in the delta
    index.delete(["d3"])  # a tombstone
    path = tmp_path / "bmx"
    index.save(path)
    loaded = BMXIndex.load(path)
    assert (loaded.alpha, loaded.beta, loaded.normalize_scores) == (0.8, 0.05, True)
    assert loaded.ids() == index.ids() and len(loaded) == 3
    for q in (["b", "c"], ["x"], ["d"], ["a", "c", "c"]):
        assert loaded.search(q, 10) == index.search(q, 10)
    # the loaded index keeps working and saves again over itself
    loaded.upsert(["d5"], [["x", "x"]])
    loaded.delete(["d1"])
    index.upsert(["d5"], [["x", "x"]])
    index.delete(["d1"])
    loaded.save(path)
    again = BMXIndex.load(path)
    for q in (["x"], ["b", "c"]):
        assert again.search(q, 10) == index.search(q, 10)
    assert sorted(p.name for p in path.iterdir() if p.name.startswith("gen-")).__len__() == 1


def test_save_load_defaults_and_empty(tmp_path: Path) -> None:
    BMXIndex().save(tmp_path / "empty")
    empty = BMXIndex.load(tmp_path / "empty")
    assert len(empty) == 0 and empty.search(["a"], 3) == []
    assert (empty.alpha, empty.beta, empty.normalize_scores) == (None, None, False)
    empty.upsert(["a"], [["t"]])
    assert [i for i, _ in empty.search(["t"], 3)] == ["a"]


def gen_dir(path: Path) -> Path:
    return path / (path / "CURRENT").read_text().strip()


@pytest.mark.parametrize(
    "damage",
    [
        "no_current",
        "bad_current",
        "missing_array",
        "truncated_array",
        "bad_header",
        "version",
        "foreign",
        "slots",
    ],
)
def test_corrupt_index_raises_store_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "bmx"
    index = tiny()
    index.compact()  # postings in the main segment
    index.save(path)
    gen = gen_dir(path)
    if damage == "no_current":
        (path / "CURRENT").unlink()
    elif damage == "bad_current":
        (path / "CURRENT").write_text("gen-does-not-exist\n")
    elif damage == "missing_array":
        (gen / "main_slots.npy").unlink()
    elif damage == "truncated_array":
        data = (gen / "fwd_terms.npy").read_bytes()
        (gen / "fwd_terms.npy").write_bytes(data[: len(data) - 4])
    elif damage == "bad_header":
        (gen / "header.json").write_text("{not json")
    elif damage in ("version", "foreign"):
        header = json.loads((gen / "header.json").read_text())
        header["version" if damage == "version" else "format"] = 99 if damage == "version" else "other"
        (gen / "header.json").write_text(json.dumps(header))
    elif damage == "slots":  # postings that point past the documents
        slots = np.load(gen / "main_slots.npy")
        slots[0] = 1000
        np.save(gen / "main_slots.npy", slots, allow_pickle=False)
    with pytest.raises(StoreError):
        BMXIndex.load(path)


def test_load_missing_path_and_file_path(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        BMXIndex.load(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError):
        tiny().save(tmp_path / "file")


def test_failed_save_keeps_previous_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bmx"
    old = tiny()
    old.save(path)
    want = old.search(["b", "c"], 10)

    newer = tiny()
    newer.upsert(["d9"], [["b", "b", "c"]])
    calls = {"n": 0}
    real_save = np.save

    def failing_save(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        real_save(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bmx.np, "save", failing_save)
    with pytest.raises(StoreError):
        newer.save(path)
    monkeypatch.undo()
    assert BMXIndex.load(path).search(["b", "c"], 10) == want

    # a crash before CURRENT is swapped: a complete new generation is on disk, CURRENT still old
    def crash_replace(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bmx.os, "replace", crash_replace)
    with pytest.raises(KeyboardInterrupt):
        newer.save(path)
    monkeypatch.undo()
    assert BMXIndex.load(path).search(["b", "c"], 10) == want

    # a hard crash can leave a half-written generation and a temp pointer: ignored, then cleaned
    (path / "gen-halfwritten").mkdir()
    (path / "gen-halfwritten" / "doc_len.npy").write_bytes(b"\x93NUMPY")
    (path / ".CURRENT.gen-halfwritten.tmp").write_text("gen-halfwritten")
    assert BMXIndex.load(path).search(["b", "c"], 10) == want
    newer.save(path)
    assert BMXIndex.load(path).search(["b", "c"], 10) == newer.search(["b", "c"], 10)
    assert sorted(p.name for p in path.iterdir() if p.name != "CURRENT") == [gen_dir(path).name]


@pytest.mark.parametrize(("mask_max", "sparse_fraction"), [(0, 0.0), (0, 1e9), (12, 0.0), (12, 1e9)])
def test_aggregation_paths_agree(
    monkeypatch: pytest.MonkeyPatch, mask_max: int, sparse_fraction: float
) -> None:
    """Bit-mask vs per-term-sum bookkeeping and dense vs sparse accumulation give the same hits."""
    rng = random.Random(11)
    corpus = random_corpus(rng, 400, 60)
    index = BMXIndex()
    index.upsert(list(corpus), list(corpus.values()))
    index.delete([f"doc{i}" for i in range(0, 400, 9)])
    queries = [[*random_corpus(rng, 1, 60)["doc0"][:14], "w0", "w0"] for _ in range(40)]
    want = [index.search(q, 12) for q in queries]  # default settings
    monkeypatch.setattr(bmx, "_MASK_MAX_TERMS", mask_max)
    monkeypatch.setattr(bmx, "_SPARSE_QUERY_FRACTION", sparse_fraction)
    for q, w in zip(queries, want, strict=True):
        assert_hits(index.search(q, 12), w, tol=1e-12)


def test_chunked_upsert_matches_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = random_corpus(random.Random(3), 100, 50)
    whole = BMXIndex()
    whole.upsert(list(corpus), list(corpus.values()))
    monkeypatch.setattr(bmx, "_CHUNK_DOCS", 7)
    chunked = BMXIndex()
    chunked.upsert(list(corpus), list(corpus.values()))
    assert chunked.ids() == whole.ids()
    for q in (["w0"], ["w1", "w3", "词2"], ["w7", "w7", "w40"]):
        assert_hits(chunked.search(q, 20), whole.search(q, 20), tol=1e-12)


def test_failed_upsert_in_a_later_chunk_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bmx, "_CHUNK_DOCS", 2)
    index = tiny()
    before = index.search(["b", "c"], 10)
    docs = [["new1"], ["new2", "b"], ["new3"], ["new4", ["unhashable"]]]
    with pytest.raises(InputError):
        index.upsert(["d1", "x", "y", "z"], docs)  # type: ignore[arg-type]
    assert index.ids() == ["d1", "d2", "d3"] and index.search(["new1"], 5) == []
    assert index.search(["b", "c"], 10) == before
    index.upsert(["x"], [["new1", "b"]])  # the vocabulary is consistent afterwards
    assert [i for i, _ in index.search(["new1"], 5)] == ["x"]
