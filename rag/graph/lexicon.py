"""Which Chinese words can name an entity: jieba's dictionary tags and IDF table, loaded once.

jieba ships a dictionary (``dict.txt``: word, frequency, part-of-speech tag)
and the IDF table behind its TF-IDF keyword extraction (``analyse/idf.txt``).
A word of two or more characters is an *entity word* when

* its tag is a noun class (``n nr ns nt nz nrt nrfg ng``), a verbal noun
  (``vn``, e.g. 部署 检索) or an abbreviation (``j``, e.g. 上下文), and, for the
  common-noun tags ``n ng vn j``, its IDF is at least :data:`MIN_NOUN_IDF`
  (drops 问题 方法 时候 情况: generic nouns with IDF below 5); proper names
  (``nr ns nt nz nrt nrfg``) are kept whatever their IDF;
* or, whatever its tag, its IDF is at least :data:`MIN_RARE_IDF`: jieba's tags
  are unreliable on technical words (显存 is tagged as a verb), and a word
  that rare is a term more often than not.

Parsing the two files takes about a second; the result is cached as a marshal
file (:func:`entity_words` with ``cache_dir``).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
import threading
from pathlib import Path

__all__ = ["MIN_NOUN_IDF", "MIN_RARE_IDF", "entity_words", "median_idf"]

MIN_NOUN_IDF = 5.0
MIN_RARE_IDF = 12.0
_NOUN_TAGS = frozenset({"n", "ng", "vn", "j"})
_NAME_TAGS = frozenset({"nr", "ns", "nt", "nz", "nrt", "nrfg"})
_MEDIAN_IDF = 11.9547675029  # jieba's idf.txt median (what its TF-IDF uses for unseen words)

_LOCK = threading.Lock()
_WORDS: dict[str, float] | None = None


def median_idf() -> float:
    return _MEDIAN_IDF


def _jieba_dir() -> Path:
    import jieba

    return Path(jieba.__file__).parent


def _parse(folder: Path) -> dict[str, float]:
    idf: dict[str, float] = {}
    with open(folder / "analyse" / "idf.txt", encoding="utf-8") as f:
        for line in f:
            word, _, number = line.partition(" ")
            with contextlib.suppress(ValueError):
                idf[word] = float(number)
    words: dict[str, float] = {}
    with open(folder / "dict.txt", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3 or len(parts[0]) < 2:
                continue
            word, tag = parts[0], parts[2]
            value: float = idf.get(word, _MEDIAN_IDF)
            if tag in _NAME_TAGS or (tag in _NOUN_TAGS and value >= MIN_NOUN_IDF) or value >= MIN_RARE_IDF:
                words[word] = value
    return words


def entity_words(cache_dir: Path | None = None) -> dict[str, float]:
    """``{word: idf}`` for every entity word (see the module docstring), process-wide."""
    global _WORDS
    if _WORDS is not None:
        return _WORDS
    with _LOCK:
        if _WORDS is not None:
            return _WORDS
        folder = _jieba_dir()
        stamp = f"{os.stat(folder / 'dict.txt').st_size}-{os.stat(folder / 'analyse' / 'idf.txt').st_size}"
        name = f"zh-entity-words-{stamp}-py{sys.version_info[0]}{sys.version_info[1]}.marshal"
        cached = cache_dir / name if cache_dir is not None else None
        words: dict[str, float] | None = None
        if cached is not None and cached.is_file():
            try:
                loaded = marshal.loads(cached.read_bytes())
                words = loaded if isinstance(loaded, dict) else None
            except (OSError, ValueError, EOFError, TypeError):
                words = None
        if words is None:
            words = _parse(folder)
            if cached is not None:
                with contextlib.suppress(OSError):
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_bytes(marshal.dumps(words))
                    os.replace(tmp, cached)
        _WORDS = words
        return words
