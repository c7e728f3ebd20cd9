"""BMX sparse index: entropy-weighted lexical scoring that updates in place.

Scoring follows BMX (Li, Lipp, Shakir, Huang, Li, "BMX: Entropy-weighted
Similarity and Semantic-enhanced Lexical Search", arXiv:2408.06643, eq. 1-6)
as implemented in its reference code (mixedbread-ai/baguetter 0.1.1,
``baguetter/indices/sparse/models/bmx/index.py``). For a query ``Q`` of ``m``
known tokens ``q_1..q_m`` (repeats count) and a document ``D``::

    score(D, Q) = sum_i [ IDF(q_i) * F(q_i, D) * (alpha + 1)
                          / (F(q_i, D) + alpha * |D| / avgdl + alpha * E_avg)
                          + beta * E~(q_i) * S(Q, D) ]   over the q_i found in D

    IDF(q)   = ln(1 + (N - df(q) + 0.5) / (df(q) + 0.5))
    E(q)     = - sum_{D' containing q} p * ln(p),  p = sigmoid(F(q, D'))
    E~(q_i)  = E(q_i) / max_j E(q_j)            (over the query's tokens)
    E_avg    = mean_i E~(q_i)
    S(Q, D)  = |{i : q_i in D}| / m
    alpha    = clip(avgdl / 100, 0.5, 1.5)      unless given
    beta     = 1 / ln(1 + N)                    unless given

``F`` is the term frequency, ``|D|`` the document length in tokens, ``avgdl``
the mean length and ``N`` the number of documents. With ``normalize_scores``
a score is divided by ``m * ln(1 + (N - 0.5) / 1.5)`` (the reference code's
normalisation). Documents containing no query token are never returned.

Layout. ``E(q)`` is a sum over the term's postings, so it, ``df`` and the total
length are updated by adding or subtracting the changed document's own terms.
Postings live in a term-major CSR "main" segment built in one vectorised pass,
plus a small per-term "delta" of documents added since; a deleted document is
a tombstone until the next compaction, which renumbers the surviving documents
in their insertion order and rebuilds the main segment. A doc-major forward
copy of every document's ``(term, tf)`` pairs makes deletes and compactions
cheap. Ties rank by insertion order (an upsert moves a document to the end).

On disk (``save``/``load``): a directory holding ``CURRENT`` (the name of the
live generation) and generation directories of ``.npy`` arrays (no pickle)
plus ``header.json``. A save writes a new generation, fsyncs it, then swaps
``CURRENT`` with ``os.replace``; a crash at any point leaves the previous
index loadable. One writer at a time; an index object is not thread-safe.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, count, islice, pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.errors import InputError, StoreError

FORMAT_NAME = "rag-bmx"
FORMAT_VERSION = 1

_CURRENT = "CURRENT"
_HEADER = "header.json"
_ARRAY_NAMES = (
    "doc_len",
    "alive",
    "fwd_ptr",
    "fwd_terms",
    "fwd_tfs",
    "main_ptr",
    "main_slots",
    "main_tfs",
    "df",
    "ent",
    "ids_blob",
    "ids_off",
    "terms_blob",
    "terms_off",
)

# Postings in the delta beyond which it is folded into the main segment.
_DELTA_MIN_POSTINGS = 32_768
_DELTA_MAIN_FRACTION = 1 / 32
# Tombstones beyond which a compaction runs.
_DEAD_MIN = 1_024
_DEAD_FRACTION = 0.2
# Documents mapped and counted at a time by a large upsert (bounds temporary memory).
_CHUNK_DOCS = 8192
# Below this share of the slot count, a query aggregates its postings sparsely.
_SPARSE_QUERY_FRACTION = 1 / 16
# Up to this many distinct query terms, the terms a document holds are found as one bit mask.
_MASK_MAX_TERMS = 12

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# ----------------------------------------------------------------------------- pure scoring functions


def bmx_idf(n_docs: int, df: npt.ArrayLike) -> FloatArray:
    """BMX/Lucene IDF: ``ln(1 + (N - df + 0.5) / (df + 0.5))`` (arXiv:2408.06643, eq. 2)."""
    d = np.asarray(df, dtype=np.float64)
    return np.asarray(np.log1p((n_docs - d + 0.5) / (d + 0.5)), dtype=np.float64)


def bmx_entropy_terms(tf: npt.ArrayLike) -> FloatArray:
    """One posting's share of a term's entropy: ``-p ln p`` with ``p = sigmoid(tf)``.

    A term's entropy ``E(q)`` is the sum of this over the term's postings
    (arXiv:2408.06643, eq. 3; baguetter 0.1.1 sums over the documents holding the term).
    """
    t = np.asarray(tf, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-t))
    return np.asarray(-p * np.log(p), dtype=np.float64)


def bmx_default_alpha(avgdl: float) -> float:
    """``alpha = clip(avgdl / 100, 0.5, 1.5)`` (baguetter 0.1.1 default)."""
    return max(min(1.5, avgdl / 100.0), 0.5)


def bmx_default_beta(n_docs: int) -> float:
    """``beta = 1 / ln(1 + N)`` (baguetter 0.1.1 default)."""
    return 1.0 / math.log(1.0 + n_docs)


def bmx_normalizer(n_query_tokens: int, n_docs: int) -> float:
    """Score divisor when normalising: ``m * ln(1 + (N - 0.5) / 1.5)`` (baguetter 0.1.1)."""
    return n_query_tokens * math.log(1.0 + (n_docs - 0.5) / 1.5)


def bmx_term_scores(
    tf: npt.ArrayLike,
    doc_len: npt.ArrayLike,
    *,
    idf: float,
    avgdl: float,
    alpha: float,
    avg_entropy: float,
) -> FloatArray:
    """The BM25-like part of one query token's BMX score for each of its postings.

    ``IDF * tf * (alpha + 1) / (tf + alpha * |D| / avgdl + alpha * E_avg)`` (arXiv:2408.06643, eq. 1).
    """
    f = np.asarray(tf, dtype=np.float64)
    rel = np.asarray(doc_len, dtype=np.float64) / avgdl
    return np.asarray(idf * (f * (alpha + 1.0)) / (f + alpha * rel + alpha * avg_entropy), dtype=np.float64)


def bmx_query_entropies(entropies: npt.ArrayLike) -> tuple[FloatArray, float]:
    """Normalised entropies ``E~`` of a query's tokens and their mean ``E_avg`` (arXiv:2408.06643, eq. 4).

    Each entropy is divided by the largest among the query's tokens. If every
    entropy is 0 (only possible when all tfs are huge), all normalised values are 0.
    """
    e = np.asarray(entropies, dtype=np.float64)
    top = float(e.max()) if e.size else 0.0
    norm = e / top if top > 0.0 else np.zeros_like(e)
    return norm, float(norm.mean()) if norm.size else 0.0


# ----------------------------------------------------------------------------- storage helpers


class _Growable:
    """A 1-D numpy array with amortised O(1) appends (capacity doubles)."""

    __slots__ = ("buf", "n")

    def __init__(self, dtype: npt.DTypeLike, data: npt.ArrayLike | None = None) -> None:
        arr = np.empty(0, dtype=dtype) if data is None else np.asarray(data, dtype=dtype)
        self.buf: np.ndarray = arr
        self.n = int(arr.shape[0])

    def view(self) -> np.ndarray:
        return self.buf[: self.n]

    def extend(self, values: npt.ArrayLike) -> None:
        vals = np.asarray(values, dtype=self.buf.dtype)
        need = self.n + int(vals.shape[0])
        if need > self.buf.shape[0]:
            cap = max(need, 2 * self.buf.shape[0], 16)
            new = np.empty(cap, dtype=self.buf.dtype)
            new[: self.n] = self.buf[: self.n]
            self.buf = new
        self.buf[self.n : need] = vals
        self.n = need

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more elements without further copies."""
        need = self.n + extra
        if need > self.buf.shape[0]:
            new = np.empty(max(need, self.buf.shape[0] * 3 // 2), dtype=self.buf.dtype)
            new[: self.n] = self.buf[: self.n]
            self.buf = new

    def grow_zeros(self, size: int) -> None:
        """Extend with zeros up to ``size`` elements."""
        if size > self.n:
            self.extend(np.zeros(size - self.n, dtype=self.buf.dtype))


def _encode_strings(items: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (UTF-8 blob as uint8, code-point offsets as int64)."""
    blob = "".join(items).encode("utf-8", "surrogatepass")
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    if items:
        np.cumsum(np.fromiter(map(len, items), dtype=np.int64, count=len(items)), out=offsets[1:])
    return np.frombuffer(blob, dtype=np.uint8), offsets


def _decode_strings(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    text = blob.tobytes().decode("utf-8", "surrogatepass")
    off = offsets.tolist()
    if off and (off[0] != 0 or off[-1] != len(text)):
        raise StoreError("BMX index is corrupt: string table does not match its offsets")
    return [text[a:b] for a, b in pairwise(off)]


def _vocabulary(terms: list[str]) -> defaultdict[str, int]:
    """Term -> id; looking up an unseen term with ``[]`` gives it the next id."""
    return defaultdict(count(len(terms)).__next__, zip(terms, range(len(terms)), strict=True))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------- the index


def upsert_batch(ids: Sequence[str], docs: Sequence[Sequence[str]]) -> dict[str, Sequence[str]]:
    """``{id: tokens}`` of an upsert call, checked (string ids, token lists not strings); a
    repeated id keeps its last token list."""
    if len(ids) != len(docs):
        raise InputError(f"upsert got {len(ids)} ids but {len(docs)} documents")
    batch: dict[str, Sequence[str]] = {}
    for doc_id, doc in zip(ids, docs, strict=True):
        if not isinstance(doc_id, str):
            raise InputError(f"document ids must be strings, got {type(doc_id).__name__}")
        if isinstance(doc, str | bytes):
            raise InputError(f"document {doc_id!r} must be a list of tokens, not a string")
        batch[doc_id] = doc
    return batch


class BMXIndex:
    """An incremental BMX index over token lists, keyed by string ids.

    ``alpha``/``beta`` of ``None`` mean the adaptive defaults of the reference
    implementation (``clip(avgdl/100, 0.5, 1.5)`` and ``1/ln(1+N)``), computed
    from the corpus at query time.
    """

    def __init__(
        self, *, alpha: float | None = None, beta: float | None = None, normalize_scores: bool = False
    ) -> None:
        for name, value in (("alpha", alpha), ("beta", beta)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise InputError(f"BMX {name} must be a finite number >= 0, got {value!r}")
        self.alpha = alpha
        self.beta = beta
        self.normalize_scores = bool(normalize_scores)
        # vocabulary (term -> id, id -> term); looking up an unseen term with [] gives it the next id,
        # so a batch is mapped in one C-level pass; lookups that must not insert use .get().
        # Per term: df and entropy E over the live documents.
        self._vocab = _vocabulary([])
        self._terms: list[str] = []
        self._df = _Growable(np.int64)
        self._ent = _Growable(np.float64)
        # per slot (a slot is a document version; slots are in insertion order)
        self._slot_ids: list[str] = []
        self._id_to_slot: dict[str, int] = {}
        self._doc_len = _Growable(np.int64)
        self._alive = _Growable(np.bool_)
        # forward store: doc-major (term, tf) pairs of every slot
        self._fwd_ptr = _Growable(np.int64, np.zeros(1, dtype=np.int64))
        self._fwd_terms = _Growable(np.int32)
        self._fwd_tfs = _Growable(np.int32)
        # main segment: term-major postings of slots < _main_slot_end
        self._main_ptr: np.ndarray = np.zeros(1, dtype=np.int64)
        self._main_slots: np.ndarray = np.zeros(0, dtype=np.int32)
        self._main_tfs: np.ndarray = np.zeros(0, dtype=np.int32)
        self._main_slot_end = 0
        # delta: term id -> (slots, tfs) of slots >= _main_slot_end
        self._delta: dict[int, tuple[list[int], list[int]]] = {}
        self._delta_postings = 0
        self._n_live = 0
        self._n_dead = 0
        self._total_len = 0
        # bumped by every change; keys the per-slot length-norm cache
        self._version = 0
        self._lnorm: FloatArray = np.zeros(0)
        self._lnorm_key: tuple[int, float] | None = None
        self._dead: np.ndarray = np.zeros(0, dtype=np.intp)
        self._dead_key = -1

    # ------------------------------------------------------------------ basic protocol

    def __len__(self) -> int:
        return self._n_live

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._id_to_slot

    def __repr__(self) -> str:
        return (
            f"BMXIndex(docs={self._n_live}, terms={len(self._terms)}, alpha={self.alpha}, "
            f"beta={self.beta}, normalize_scores={self.normalize_scores})"
        )

    def ids(self) -> list[str]:
        """Ids of the indexed documents in insertion order (an upsert moves an id to the end)."""
        return sorted(self._id_to_slot, key=self._id_to_slot.__getitem__)

    def document_frequency(self, term: str) -> int:
        """How many live documents contain ``term`` (0 for a term the index never saw)."""
        t = self._vocab.get(term)
        if t is None or t >= self._df.n:
            return 0
        return int(self._df.buf[t])

    # ------------------------------------------------------------------ updates

    def upsert(self, ids: Sequence[str], docs: Sequence[Sequence[str]]) -> None:
        """Add documents given as token lists; an existing id is replaced.

        A repeated id within one call keeps its last token list.
        """
        batch = upsert_batch(ids, docs)
        if not batch:
            return
        doc_ids = list(batch)
        token_lists = list(batch.values())
        # map tokens to term ids and count them, a chunk at a time to bound temporary memory;
        # nothing else changes until every chunk has succeeded
        n_terms_before = len(self._terms)
        chunks: list[tuple[IntArray, np.ndarray, np.ndarray, IntArray]] = []
        try:
            for start in range(0, len(token_lists), _CHUNK_DOCS):
                term_ids, lengths = self._to_term_ids(token_lists[start : start + _CHUNK_DOCS])
                chunks.append((*self._count_terms(term_ids, lengths), lengths))
                del term_ids
        except BaseException:
            self._forget_terms_from(n_terms_before)
            raise
        self._delete_slots([self._id_to_slot[i] for i in doc_ids if i in self._id_to_slot])

        first_slot = len(self._slot_ids)
        n_new = len(doc_ids)
        n_post = sum(int(c[1].shape[0]) for c in chunks)
        self._slot_ids.extend(doc_ids)
        self._id_to_slot.update(zip(doc_ids, range(first_slot, first_slot + n_new), strict=True))
        n_terms = len(self._terms)
        self._df.grow_zeros(n_terms)
        self._ent.grow_zeros(n_terms)
        df = self._df.view()
        ent = self._ent.view()
        for grow, extra in ((self._doc_len, n_new), (self._alive, n_new), (self._fwd_ptr, n_new)):
            grow.reserve(extra)
        self._fwd_terms.reserve(n_post)
        self._fwd_tfs.reserve(n_post)
        added_len = 0
        for fwd_ptr, fwd_terms, fwd_tfs, lengths in chunks:
            self._doc_len.extend(lengths)
            self._alive.extend(np.ones(lengths.shape[0], dtype=np.bool_))
            self._fwd_ptr.extend(fwd_ptr[1:] + self._fwd_terms.n)
            self._fwd_terms.extend(fwd_terms)
            self._fwd_tfs.extend(fwd_tfs)
            if lengths.shape[0] == 1:  # terms of one document are unique: fancy indexing is exact
                df[fwd_terms] += 1
                ent[fwd_terms] += bmx_entropy_terms(fwd_tfs)
            else:
                df += np.bincount(fwd_terms, minlength=n_terms)
                ent += np.bincount(fwd_terms, weights=bmx_entropy_terms(fwd_tfs), minlength=n_terms)
            added_len += int(lengths.sum())
        self._n_live += n_new
        self._total_len += added_len
        self._version += 1

        limit = max(_DELTA_MIN_POSTINGS, int(self._main_slots.shape[0] * _DELTA_MAIN_FRACTION))
        if self._delta_postings + n_post > limit:
            self._merge_delta()
        else:
            ptr = self._fwd_ptr.view()[first_slot:]
            a0 = int(ptr[0])
            slots = np.repeat(np.arange(first_slot, first_slot + n_new), np.diff(ptr)).tolist()
            terms = self._fwd_terms.view()[a0:].tolist()
            tfs = self._fwd_tfs.view()[a0:].tolist()
            delta = self._delta
            for t, slot, f in zip(terms, slots, tfs, strict=True):
                entry = delta.get(t)
                if entry is None:
                    delta[t] = ([slot], [f])
                else:
                    entry[0].append(slot)
                    entry[1].append(f)
            self._delta_postings += n_post
        self._maybe_compact()

    def delete(self, ids: Iterable[str]) -> int:
        """Remove documents by id; unknown ids are ignored. Returns how many were removed."""
        slots = [self._id_to_slot[i] for i in dict.fromkeys(ids) if i in self._id_to_slot]
        self._delete_slots(slots)
        self._maybe_compact()
        return len(slots)

    def compact(self) -> None:
        """Drop tombstones, fold the delta into the main segment and forget unused terms."""
        self._rebuild()

    def _delete_slots(self, slots: list[int]) -> None:
        if not slots:
            return
        ptr = self._fwd_ptr.view()
        terms = self._fwd_terms.view()
        tfs = self._fwd_tfs.view()
        df = self._df.view()
        ent = self._ent.view()
        alive = self._alive.view()
        for slot in slots:
            a, b = int(ptr[slot]), int(ptr[slot + 1])
            t = terms[a:b]
            df[t] -= 1
            ent[t] -= bmx_entropy_terms(tfs[a:b])
            alive[slot] = False
            del self._id_to_slot[self._slot_ids[slot]]
            self._total_len -= int(self._doc_len.buf[slot])
        self._n_live -= len(slots)
        self._n_dead += len(slots)
        self._version += 1
        if self._n_live == 0:
            self._total_len = 0

    def _maybe_compact(self) -> None:
        if self._n_dead > max(_DEAD_MIN, int(_DEAD_FRACTION * len(self._slot_ids))):
            self._rebuild()

    def _to_term_ids(self, docs: list[Sequence[str]]) -> tuple[np.ndarray, IntArray]:
        """Flat int32 term ids of all tokens (new terms join the vocabulary) and per-doc lengths."""
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        flat = list(chain.from_iterable(docs))
        vocab = self._vocab
        old = len(self._terms)
        try:
            term_ids = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int32, count=len(flat))
        except TypeError as exc:
            raise InputError(f"tokens must be strings: {exc}") from exc
        finally:  # keep the id -> term list in step with the vocabulary, also after a failure
            new = list(islice(reversed(vocab), len(vocab) - old))
            new.reverse()
            self._terms.extend(new)
        bad = next((t for t in new if not isinstance(t, str)), None)
        if bad is not None:
            raise InputError(f"tokens must be strings, got {type(bad).__name__}")
        return term_ids, lengths

    def _forget_terms_from(self, n_terms: int) -> None:
        """Undo vocabulary additions: drop the terms with id >= ``n_terms``."""
        for t in self._terms[n_terms:]:
            del self._vocab[t]
        del self._terms[n_terms:]
        self._vocab.default_factory = count(n_terms).__next__

    def _count_terms(
        self, term_ids: np.ndarray, lengths: IntArray
    ) -> tuple[IntArray, np.ndarray, np.ndarray]:
        """Per document: its distinct terms (ascending) and their counts, as a CSR triple."""
        n_docs = int(lengths.shape[0])
        if n_docs == 1:
            uniq, counts = np.unique(term_ids, return_counts=True)
            ptr = np.array([0, uniq.shape[0]], dtype=np.int64)
            return ptr, uniq.astype(np.int32), counts.astype(np.int32)
        import scipy.sparse as sp

        indptr = np.zeros(n_docs + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        n_terms = max(len(self._terms), 1)
        mat = sp.csr_matrix(
            (np.ones(term_ids.shape[0], dtype=np.int32), term_ids, indptr), shape=(n_docs, n_terms)
        )
        mat.sum_duplicates()
        return (
            np.asarray(mat.indptr, dtype=np.int64),
            np.asarray(mat.indices, dtype=np.int32),
            np.asarray(mat.data, dtype=np.int32),
        )

    def _merge_delta(self) -> None:
        """Fold the delta into the main segment; tombstones stay (queries mask them)."""
        self._set_main(self._fwd_ptr.view(), self._fwd_terms.view(), self._fwd_tfs.view(), len(self._terms))

    def _set_main(self, ptr: np.ndarray, terms: np.ndarray, tfs: np.ndarray, n_terms: int) -> None:
        """Term-major postings of all slots from the doc-major forward store (one C pass, scipy)."""
        import scipy.sparse as sp

        n_docs = ptr.shape[0] - 1
        csc = sp.csr_matrix((tfs, terms, ptr), shape=(n_docs, max(n_terms, 1))).tocsc()
        self._main_ptr = np.asarray(csc.indptr, dtype=np.int64)[: n_terms + 1]
        self._main_slots = np.asarray(csc.indices, dtype=np.int32)
        self._main_tfs = np.asarray(csc.data, dtype=np.int32)
        self._main_slot_end = n_docs
        self._delta = {}
        self._delta_postings = 0

    def _rebuild(self) -> None:
        """Compact: drop dead slots (renumbering the rest in order), recount df and entropy
        exactly, forget unused terms, rebuild the main segment."""
        alive = self._alive.view()
        ptr = self._fwd_ptr.view()
        terms = self._fwd_terms.view()
        tfs = self._fwd_tfs.view()
        doc_len = self._doc_len.view()
        if self._n_dead:
            keep = np.repeat(alive, np.diff(ptr))
            terms = terms[keep]
            tfs = tfs[keep]
            counts = np.diff(ptr)[alive]
            ptr = np.zeros(counts.shape[0] + 1, dtype=np.int64)
            np.cumsum(counts, out=ptr[1:])
            doc_len = doc_len[alive]
            self._slot_ids = [s for s, a in zip(self._slot_ids, alive.tolist(), strict=True) if a]
            self._id_to_slot = {doc_id: i for i, doc_id in enumerate(self._slot_ids)}
        n_docs = len(self._slot_ids)
        n_terms = len(self._terms)
        df = np.bincount(terms, minlength=n_terms).astype(np.int64)
        ent = np.bincount(terms, weights=bmx_entropy_terms(tfs), minlength=n_terms)
        used = df > 0
        if n_terms and not used.all():
            remap = np.cumsum(used, dtype=np.int64) - 1
            terms = remap[terms].astype(np.int32)
            self._terms = [t for t, u in zip(self._terms, used.tolist(), strict=True) if u]
            self._vocab = _vocabulary(self._terms)
            df = df[used]
            ent = ent[used]
            n_terms = len(self._terms)
        self._set_main(ptr, terms, tfs, n_terms)
        self._fwd_ptr = _Growable(np.int64, ptr)
        self._fwd_terms = _Growable(np.int32, terms)
        self._fwd_tfs = _Growable(np.int32, tfs)
        self._doc_len = _Growable(np.int64, doc_len)
        self._alive = _Growable(np.bool_, np.ones(n_docs, dtype=np.bool_))
        self._df = _Growable(np.int64, df)
        self._ent = _Growable(np.float64, ent)
        self._n_dead = 0
        self._n_live = n_docs
        self._total_len = int(doc_len.sum())
        self._version += 1

    # ------------------------------------------------------------------ search

    def search(self, query: Sequence[str], k: int) -> list[tuple[str, float]]:
        """The ``k`` best documents for a token list, best first, as ``(id, score)``.

        Unknown tokens are ignored; a query with no known token gives ``[]``;
        documents with no query token are never returned. Ties rank by insertion order.
        """
        return self.search_and_scorer(query, k)[0]

    def search_and_scorer(
        self, query: Sequence[str], k: int
    ) -> tuple[list[tuple[str, float]], Callable[[Iterable[str]], dict[str, float]]]:
        """:meth:`search`, and a function that gives :meth:`score_ids` for the same query from the
        same scoring pass (re-scoring fusion asks for the score of chunks search did not rank)."""
        if isinstance(query, str | bytes):
            raise InputError("a BMX query must be a list of tokens, not a string")
        if k < 0:
            raise InputError(f"k must be >= 0, got {k}")
        scored = self._score(query) if self._n_live else None

        def scorer(ids: Iterable[str]) -> dict[str, float]:
            return self._lookup(scored, ids)

        if k == 0 or scored is None:
            return [], scorer
        cand, scores, n_tokens = scored
        n = scores.shape[0]
        # keep everything that ties with the k-th best, so that ties can rank by slot
        kth = np.partition(scores, n - k)[n - k] if n > k else -np.inf
        if cand is None:
            slots = np.flatnonzero((scores >= kth) & (scores > 0.0))
            scores = scores[slots]
        elif n > k:
            sel = np.flatnonzero(scores >= kth)
            slots, scores = cand[sel], scores[sel]
        else:
            slots = cand
        order = np.lexsort((slots, -scores))[:k]
        if self.normalize_scores:
            scores = scores / bmx_normalizer(n_tokens, self._n_live)
        names = self._slot_ids
        hits = [
            (names[s], float(v)) for s, v in zip(slots[order].tolist(), scores[order].tolist(), strict=True)
        ]
        return hits, scorer

    def score_ids(self, query: Sequence[str], ids: Iterable[str]) -> dict[str, float]:
        """The BMX score of each indexed document of ``ids`` for a token list (0 for one that holds
        no query token, as for every document when no query token is known); ids not indexed are
        left out. The same scores :meth:`search` returns, for documents it may not have ranked."""
        if isinstance(query, str | bytes):
            raise InputError("a BMX query must be a list of tokens, not a string")
        return self._lookup(self._score(query) if self._n_live else None, ids)

    def _lookup(
        self, scored: tuple[np.ndarray | None, FloatArray, int] | None, ids: Iterable[str]
    ) -> dict[str, float]:
        slots = {d: self._id_to_slot[d] for d in ids if d in self._id_to_slot}
        if not slots:
            return {}
        if scored is None:
            return dict.fromkeys(slots, 0.0)
        cand, scores, n_tokens = scored
        want = np.fromiter(slots.values(), dtype=np.int64, count=len(slots))
        if cand is None:
            got = scores[want]
        elif cand.shape[0] == 0:
            got = np.zeros(want.shape)
        else:  # cand is ascending: find each wanted slot in it
            at = np.minimum(np.searchsorted(cand, want), cand.shape[0] - 1)
            got = np.where(cand[at] == want, scores[at], 0.0)
        if self.normalize_scores:
            got = got / bmx_normalizer(n_tokens, self._n_live)
        return {d: float(v) for d, v in zip(slots, got.tolist(), strict=True)}

    def search_many(self, queries: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        """:meth:`search` for each query."""
        return [self.search(q, k) for q in queries]

    def _score(self, query: Sequence[str]) -> tuple[np.ndarray | None, FloatArray, int] | None:
        """Scores and the known-token count; None if no query token is known.

        Either ``(slots, scores, m)`` for the live slots holding a query token (ascending, scores > 0),
        or ``(None, scores, m)`` with one score per slot (0 for the others).
        """
        vocab = self._vocab
        df_all = self._df.buf
        n_known = self._df.n
        mult: dict[int, int] = {}
        for token, times in Counter(query).items():
            t = vocab.get(token) if isinstance(token, str) else None
            if t is not None and t < n_known and df_all[t] > 0:
                mult[t] = times
        if not mult:
            return None
        tids = np.fromiter(mult.keys(), dtype=np.int64, count=len(mult))
        m = np.fromiter(mult.values(), dtype=np.float64, count=len(mult))
        n_tokens = int(m.sum())
        n_docs = self._n_live
        avgdl = self._total_len / n_docs
        alpha = bmx_default_alpha(avgdl) if self.alpha is None else self.alpha
        beta = bmx_default_beta(n_docs) if self.beta is None else self.beta
        # E_avg is the mean over the query's tokens with repeats, as in the reference code
        ent_norm, _ = bmx_query_entropies(self._ent.buf[tids])
        avg_entropy = float((ent_norm * m).sum() / n_tokens)
        idf = bmx_idf(n_docs, df_all[tids])

        n_slots = len(self._slot_ids)
        lnorm = self._length_norm(alpha, avgdl)
        const = alpha * avg_entropy
        n_main_terms = self._main_ptr.shape[0] - 1
        slot_parts: list[np.ndarray] = []
        base_parts: list[FloatArray] = []
        sizes: list[int] = []
        for j, t in enumerate(tids.tolist()):
            slots_t, tfs_t = self._postings(t, n_main_terms)
            slots_t = slots_t.astype(np.intp)  # numpy indexes and counts with intp; convert once
            # IDF * tf * (alpha + 1) / (tf + alpha * |D| / avgdl + alpha * E_avg), times the repeat count
            den = lnorm[slots_t]
            den += tfs_t
            den += const
            f = tfs_t * (float(idf[j]) * (alpha + 1.0) * float(m[j]))
            f /= den
            slot_parts.append(slots_t)
            base_parts.append(f)
            sizes.append(slots_t.shape[0])
        all_slots = np.concatenate(slot_parts)
        base_w = np.concatenate(base_parts)
        # which query terms each document holds: a bit mask summed as float (exact for < 53 terms)
        n_terms = len(sizes)
        use_mask = n_terms <= _MASK_MAX_TERMS
        if use_mask:
            mask_w = np.repeat(np.exp2(np.arange(n_terms, dtype=np.float64)), sizes)
        else:
            cnt_w = np.repeat(m, sizes)
            ent_w = np.repeat(m * ent_norm, sizes)
        if all_slots.shape[0] < n_slots * _SPARSE_QUERY_FRACTION:
            cand, keys = np.unique(all_slots, return_inverse=True)
            size = cand.shape[0]
        else:
            cand, keys, size = None, all_slots, n_slots
        base = np.bincount(keys, weights=base_w, minlength=size)
        if use_mask:
            mask = np.bincount(keys, weights=mask_w, minlength=size)
            # per subset of query terms: beta * S(Q, D) * sum of E~ over the query tokens found in D,
            # with S(Q, D) = (sum of repeat counts) / n_tokens; the empty subset gives 0
            bits = ((np.arange(1 << n_terms)[:, None] >> np.arange(n_terms)) & 1).astype(np.float64)
            bonus = (bits @ m) / n_tokens * beta * (bits @ (m * ent_norm))
            scores = base + bonus[mask.astype(np.intp)]
            if cand is None:  # dense: one score per slot, 0 where no query token occurs
                if self._n_dead:
                    scores[self._dead_slots()] = 0.0
                return None, scores, n_tokens
        else:
            cnt = np.asarray(np.bincount(keys, weights=cnt_w, minlength=size), dtype=np.float64)
            ent_sum = np.asarray(np.bincount(keys, weights=ent_w, minlength=size), dtype=np.float64)
            if cand is None:
                cand = np.flatnonzero(cnt > 0.0)
                base, cnt, ent_sum = base[cand], cnt[cand], ent_sum[cand]
            scores = base + (cnt / n_tokens) * beta * ent_sum
        if self._n_dead:
            live = self._alive.buf[cand]
            cand, scores = cand[live], scores[live]
        keep = scores > 0.0
        if not keep.all():
            cand, scores = cand[keep], scores[keep]
        return cand, scores, n_tokens

    def _dead_slots(self) -> np.ndarray:
        """Slots of deleted documents, cached until the next change."""
        if self._dead_key != self._version:
            self._dead = np.flatnonzero(~self._alive.view())
            self._dead_key = self._version
        return self._dead

    def _length_norm(self, alpha: float, avgdl: float) -> FloatArray:
        """``alpha * |D| / avgdl`` per slot, cached until the next change."""
        key = (self._version, alpha)
        if self._lnorm_key != key:
            self._lnorm = self._doc_len.view() * (alpha / avgdl)
            self._lnorm_key = key
        return self._lnorm

    def _postings(self, t: int, n_main_terms: int) -> tuple[np.ndarray, np.ndarray]:
        parts_s: list[np.ndarray] = []
        parts_f: list[np.ndarray] = []
        if t < n_main_terms:
            a, b = int(self._main_ptr[t]), int(self._main_ptr[t + 1])
            if b > a:
                parts_s.append(self._main_slots[a:b])
                parts_f.append(self._main_tfs[a:b])
        entry = self._delta.get(t)
        if entry is not None:
            parts_s.append(np.array(entry[0], dtype=np.int32))
            parts_f.append(np.array(entry[1], dtype=np.int32))
        if not parts_s:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)
        if len(parts_s) == 1:
            return parts_s[0], parts_f[0]
        return np.concatenate(parts_s), np.concatenate(parts_f)

    # ------------------------------------------------------------------ persistence

    def _saved_terms(self) -> list[str]:
        """The vocabulary as saved: a term no live document holds (its documents were deleted or
        re-processed, e.g. a password an older redactor missed) is written as a unique placeholder
        instead of its text, so deleted text does not outlive its documents on disk. Such a term
        can only be referenced by tombstones, so the loaded index scores exactly the same."""
        df = self._df.view()
        dead = np.flatnonzero(df[: len(self._terms)] <= 0)
        if not dead.size:
            return self._terms
        terms = list(self._terms)
        for t in dead.tolist():
            terms[t] = f"\x00{t}"  # tokens never contain NUL, so placeholders cannot collide
        return terms

    def _arrays(self) -> dict[str, np.ndarray]:
        ids_blob, ids_off = _encode_strings(self._slot_ids)
        terms_blob, terms_off = _encode_strings(self._saved_terms())
        return {
            "doc_len": self._doc_len.view(),
            "alive": self._alive.view(),
            "fwd_ptr": self._fwd_ptr.view(),
            "fwd_terms": self._fwd_terms.view(),
            "fwd_tfs": self._fwd_tfs.view(),
            "main_ptr": self._main_ptr,
            "main_slots": self._main_slots,
            "main_tfs": self._main_tfs,
            "df": self._df.view(),
            "ent": self._ent.view(),
            "ids_blob": ids_blob,
            "ids_off": ids_off,
            "terms_blob": terms_blob,
            "terms_off": terms_off,
        }

    def save(self, path: Path) -> None:
        """Write the index to directory ``path`` atomically (see the module docstring)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise StoreError(f"cannot save the BMX index: {path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        gen = f"gen-{uuid.uuid4().hex}"
        gen_dir = path / gen
        arrays = self._arrays()
        header: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "alpha": self.alpha,
            "beta": self.beta,
            "normalize_scores": self.normalize_scores,
            "n_slots": len(self._slot_ids),
            "n_terms": len(self._terms),
            "n_live": self._n_live,
            "total_len": self._total_len,
            "main_slot_end": self._main_slot_end,
            "arrays": {
                name: {"dtype": arr.dtype.str, "shape": list(arr.shape)} for name, arr in arrays.items()
            },
        }
        try:
            gen_dir.mkdir()
            for name, arr in arrays.items():
                with open(gen_dir / f"{name}.npy", "wb") as fh:
                    np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
                    fh.flush()
                    os.fsync(fh.fileno())
            with open(gen_dir / _HEADER, "w", encoding="utf-8") as fh:
                json.dump(header, fh)
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_dir(gen_dir)
            tmp_current = path / f".{_CURRENT}.{gen}.tmp"
            with open(tmp_current, "w", encoding="utf-8") as fh:
                fh.write(gen + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_current, path / _CURRENT)
            _fsync_dir(path)
        except OSError as exc:
            shutil.rmtree(gen_dir, ignore_errors=True)
            raise StoreError(f"cannot save the BMX index to {path}: {exc}") from exc
        except BaseException:
            shutil.rmtree(gen_dir, ignore_errors=True)
            raise
        # previous generations and leftovers of interrupted saves
        for child in path.iterdir():
            if child.name != gen and (
                child.name.startswith("gen-") or child.name.startswith(f".{_CURRENT}.")
            ):
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        child.unlink()

    @classmethod
    def load(cls, path: Path) -> BMXIndex:
        """Open an index written by :meth:`save`.

        Raises StoreError if it is missing, corrupt or of another format version.
        """
        path = Path(path)
        try:
            gen = (path / _CURRENT).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"no BMX index at {path} ({exc.__class__.__name__})") from exc
        if not gen.startswith("gen-") or "/" in gen or "\\" in gen or gen in ("gen-.", "gen-.."):
            raise StoreError(f"BMX index at {path} is corrupt: bad CURRENT pointer")
        gen_dir = path / gen
        try:
            header = json.loads((gen_dir / _HEADER).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise StoreError(f"BMX index at {path} is corrupt: unreadable header ({exc})") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise StoreError(f"{path} does not hold a BMX index")
        if header.get("version") != FORMAT_VERSION:
            raise StoreError(
                f"BMX index at {path} has format version {header.get('version')!r}; "
                f"this program reads version {FORMAT_VERSION}",
                hint="rebuild the index (re-run ingest)",
            )
        try:
            return cls._from_parts(gen_dir, header)
        except StoreError:
            raise
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise StoreError(f"BMX index at {path} is corrupt: {exc}") from exc

    @classmethod
    def _from_parts(cls, gen_dir: Path, header: dict[str, Any]) -> BMXIndex:
        alpha, beta = header["alpha"], header["beta"]
        self = cls(
            alpha=None if alpha is None else float(alpha),
            beta=None if beta is None else float(beta),
            normalize_scores=bool(header["normalize_scores"]),
        )
        specs: dict[str, Any] = header["arrays"]
        arr: dict[str, np.ndarray] = {}
        for name in _ARRAY_NAMES:
            spec = specs[name]
            # copy-on-write mapping: pages load lazily, in-place edits stay private
            file = gen_dir / f"{name}.npy"
            if int(np.prod(spec["shape"])) > 0:
                a = np.load(file, mmap_mode="c", allow_pickle=False)
            else:
                a = np.load(file, allow_pickle=False)
            if a.dtype.str != spec["dtype"] or list(a.shape) != list(spec["shape"]) or a.ndim != 1:
                raise StoreError(
                    f"BMX index at {gen_dir.parent} is corrupt: array {name} does not match its header"
                )
            arr[name] = a
        n_slots, n_terms = int(header["n_slots"]), int(header["n_terms"])
        main_end = int(header["main_slot_end"])
        ptr, mptr = arr["fwd_ptr"], arr["main_ptr"]
        n_fwd = arr["fwd_terms"].shape[0]
        checks = [
            arr["doc_len"].shape[0] == n_slots,
            arr["alive"].shape[0] == n_slots,
            ptr.shape[0] == n_slots + 1 and int(ptr[0]) == 0 and int(ptr[-1]) == n_fwd,
            arr["fwd_tfs"].shape[0] == n_fwd,
            bool(np.all(np.diff(ptr) >= 0)),
            arr["df"].shape[0] == n_terms and arr["ent"].shape[0] == n_terms,
            mptr.shape[0] <= n_terms + 1 and mptr.shape[0] >= 1 and int(mptr[0]) == 0,
            int(mptr[-1]) == arr["main_slots"].shape[0] == arr["main_tfs"].shape[0],
            bool(np.all(np.diff(mptr) >= 0)),
            0 <= main_end <= n_slots,
            n_fwd == 0 or (int(arr["fwd_terms"].min()) >= 0 and int(arr["fwd_terms"].max()) < n_terms),
            arr["main_slots"].shape[0] == 0
            or (int(arr["main_slots"].min()) >= 0 and int(arr["main_slots"].max()) < main_end),
            n_fwd == 0 or int(arr["fwd_tfs"].min()) > 0,
        ]
        if not all(checks):
            raise StoreError(f"BMX index at {gen_dir.parent} is corrupt: arrays are inconsistent")
        self._slot_ids = _decode_strings(arr["ids_blob"], arr["ids_off"])
        self._terms = _decode_strings(arr["terms_blob"], arr["terms_off"])
        if len(self._slot_ids) != n_slots or len(self._terms) != n_terms:
            raise StoreError(f"BMX index at {gen_dir.parent} is corrupt: string tables have the wrong size")
        self._vocab = _vocabulary(self._terms)
        alive = arr["alive"]
        self._id_to_slot = {
            doc_id: i for i, (doc_id, a) in enumerate(zip(self._slot_ids, alive.tolist(), strict=True)) if a
        }
        if len(self._vocab) != n_terms or len(self._id_to_slot) != int(header["n_live"]):
            raise StoreError(f"BMX index at {gen_dir.parent} is corrupt: duplicate ids or terms")
        self._doc_len = _Growable(np.int64, arr["doc_len"])
        self._alive = _Growable(np.bool_, alive)
        self._fwd_ptr = _Growable(np.int64, ptr)
        self._fwd_terms = _Growable(np.int32, arr["fwd_terms"])
        self._fwd_tfs = _Growable(np.int32, arr["fwd_tfs"])
        self._df = _Growable(np.int64, arr["df"])
        self._ent = _Growable(np.float64, arr["ent"])
        self._main_ptr, self._main_slots, self._main_tfs = mptr, arr["main_slots"], arr["main_tfs"]
        self._main_slot_end = main_end
        self._n_live = len(self._id_to_slot)
        self._n_dead = n_slots - self._n_live
        self._total_len = int(header["total_len"])
        # rebuild the delta of documents added after the last compaction
        a0 = int(ptr[main_end])
        d_terms = arr["fwd_terms"][a0:].tolist()
        d_tfs = arr["fwd_tfs"][a0:].tolist()
        d_slots = np.repeat(np.arange(main_end, n_slots), np.diff(ptr[main_end:])).tolist()
        for t, s, f in zip(d_terms, d_slots, d_tfs, strict=True):
            entry = self._delta.get(t)
            if entry is None:
                self._delta[t] = ([s], [f])
            else:
                entry[0].append(s)
                entry[1].append(f)
        self._delta_postings = len(d_terms)
        return self
