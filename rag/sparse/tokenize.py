"""Tokenizer for the lexical (BMX/BM25) index: mixed Chinese/English notes with code.

Pipeline for one string:

1. Unicode NFKC normalisation (full-width ``ｄｏｃｋｅｒ １１４３４`` becomes
   ``docker 11434``, ligatures are split) and lower-casing.
2. The text is cut into CJK runs (Han, kana, Hangul) and Latin/code tokens.
3. A Latin token made only of letters and digits is a *word*: English
   stopwords are dropped and the rest is stemmed with the Snowball English
   stemmer (Porter, "Snowball: a language for stemming algorithms", 2001).
4. A token with inner connectors (``_ . - / : + # @``), a leading ``-``/``--``
   (command-line flags), a leading path marker (``/``, ``./``, ``~/``) or a
   trailing ``++``/``#`` is *code-like*: it is kept whole and unstemmed
   (``127.0.0.1:11434``, ``--gpus``, ``c++``, ``snake_case_name``), and, when
   ``code_parts`` is on, followed by its parts: the pieces between ``/ : @ =``
   that still hold a connector (``127.0.0.1``, ``tokenize.py``) and its
   alphanumeric pieces treated as words (``sentence-transformers`` also gives
   ``sentenc``, ``transform``). One-letter pieces are not emitted as parts.
5. A CJK run becomes, by ``cjk``:

   * ``"jieba"``: jieba's words (``jieba_mode="accurate"`` uses ``cut``,
     ``"search"`` uses ``cut_for_search``, which adds the short words inside
     long ones);
   * ``"bigram"``: overlapping character bigrams (a one-character run stays a
     unigram), the usual tokenizer-free choice for Chinese IR (Kwok, "Comparing
     representations in Chinese information retrieval", SIGIR 1997);
   * ``"jieba+bigram"``: both of the above;
   * ``"unigram+bigram"``: every character and every bigram.

   Chinese stopwords are dropped from the output when ``stopwords`` is on
   (a bigram is dropped only if it is itself a stopword, e.g. ``什么``).

The defaults were chosen by ``bench/bench_tokenize.py`` (figures in
``bench/results/tokenizer.md``, plain BM25): ``unigram+bigram`` is the best or
tied-best on both Chinese collections (xquad_zh nDCG@10 0.969 against 0.962
for jieba; cmrc2018 0.988, level with jieba and bigrams), about ten times
faster than jieba and needs no dictionary load (jieba takes ~1-3 s to start);
its price is about twice the terms of bigrams alone, so a larger index.
Chinese stopwords help on cmrc2018 (+0.005), English stemming, stopwords and
code parts each help on xquad_en or covidqa. Instances are callable, picklable and
deterministic; jieba and the stemmer are created lazily on first use, so
importing this module and building a Tokenizer cost nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import unicodedata
from typing import TYPE_CHECKING, Any, Literal

from rag.errors import ConfigError, DependencyMissingError

if TYPE_CHECKING:
    import jieba

CjkMode = Literal["jieba", "bigram", "jieba+bigram", "unigram+bigram"]
JiebaMode = Literal["accurate", "search"]
CJK_MODES: tuple[str, ...] = ("jieba", "bigram", "jieba+bigram", "unigram+bigram")

# Bump when the token stream changes for the same options, so that stored indexes rebuild.
_VERSION = "1"

# Han (with extensions and compatibility ideographs), 々 〆 〇, kana, Hangul syllables.
_CJK_CHARS = (
    "\u3005-\u3007\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
_CJK_RUN = f"[{_CJK_CHARS}]+"
# A word character that is not CJK ([^\W] minus the CJK ranges).
_W = rf"[^\W{_CJK_CHARS}]"
_CONNECTOR = r"[._\-/:+#@=]"
# Latin/code token: optional prefix (flag dashes or a path start, only where no word or
# connector precedes), word characters joined by connectors, optional ++ or # suffix.
_PREFIX = r"(?:--?|~?/|\.{1,2}/|\.)"
_LATIN = (
    rf"(?:(?<![\w\-./~]){_PREFIX}(?={_W}))?"  # --gpus, -e, /usr, ./run.sh, ~/notes, .env
    rf"{_W}+(?:{_CONNECTOR}+{_W}+)*"  # snake_case, dotted.names, 127.0.0.1:11434, a--b
    rf"(?:\+\+|#)?"  # c++, c#
)
_TOKEN_RE = re.compile(rf"(?P<cjk>{_CJK_RUN})|(?P<latin>{_LATIN})")
_PLAIN_WORD_RE = re.compile(rf"{_W}+")
_ALNUM_RE = re.compile(r"[^\W_]+")
_SEGMENT_SPLIT_RE = re.compile(r"[/:@=]+")
_HAS_CONNECTOR_RE = re.compile(r"[._\-+#]")

# English function words (the classic Snowball/SMART core: pronouns, auxiliaries,
# determiners, prepositions, conjunctions) plus contraction fragments left by the split.
_ENGLISH_STOPWORDS_TEXT = """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves s t d ll m re ve y don doesn didn isn aren wasn weren
"""
ENGLISH_STOPWORDS: frozenset[str] = frozenset(_ENGLISH_STOPWORDS_TEXT.split())

# Chinese function words and question words; measured in bench/bench_tokenize.py.
_CHINESE_STOPWORDS_TEXT = """
    的 了 是 在 和 与 及 或 也 都 而 就 这 那 有 个 着 之 于 为 把 被 让 给 从 对 等 吗 呢 吧 啊 呀 么
    地 得 过 将 并 还 又 以 其 该 此 即 则 但 所 其中 以及 或者 而且 并且 因为 所以 如果 但是 虽然
    这个 那个 这些 那些 一个 什么 怎么 怎样 如何 哪 哪些 哪个 哪里 谁 多少 几 为什么 是否 我们 你们 他们
"""
CHINESE_STOPWORDS: frozenset[str] = frozenset(_CHINESE_STOPWORDS_TEXT.split())

_JIEBA_LOCK = threading.Lock()
_JIEBA: jieba.Tokenizer | None = None


def _jieba() -> jieba.Tokenizer:
    """The process-wide jieba tokenizer, initialised quietly on first use."""
    global _JIEBA
    if _JIEBA is None:
        with _JIEBA_LOCK:
            if _JIEBA is None:
                try:
                    import jieba
                except ImportError as exc:  # pragma: no cover - jieba is a core dependency
                    raise DependencyMissingError(
                        "jieba is not installed", hint="pip install jieba, or use cjk='bigram'"
                    ) from exc
                jieba.setLogLevel(logging.WARNING)
                tok = jieba.Tokenizer()
                tok.initialize()
                _JIEBA = tok
    return _JIEBA


def _bigrams(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


class Tokenizer:
    """Text to index terms for the lexical index. See the module docstring."""

    def __init__(
        self,
        *,
        cjk: CjkMode = "unigram+bigram",
        stem: bool = True,
        stopwords: bool = True,
        code_parts: bool = True,
        jieba_mode: JiebaMode = "accurate",
    ) -> None:
        if cjk not in CJK_MODES:
            raise ConfigError(f"cjk must be one of {CJK_MODES}, got {cjk!r}")
        if jieba_mode not in ("accurate", "search"):
            raise ConfigError(f"jieba_mode must be 'accurate' or 'search', got {jieba_mode!r}")
        self.cjk: CjkMode = cjk
        self.stem = stem
        self.stopwords = stopwords
        self.code_parts = code_parts
        self.jieba_mode: JiebaMode = jieba_mode
        self._stemmer: Any = None
        self._stem_cache: dict[str, str] = {}

    # -- pickling: the stemmer is a C object; rebuild it lazily after unpickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stemmer"] = None
        state["_stem_cache"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(cjk={self.cjk!r}, stem={self.stem}, stopwords={self.stopwords}, "
            f"code_parts={self.code_parts}, jieba_mode={self.jieba_mode!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.fingerprint() == other.fingerprint()

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def fingerprint(self) -> str:
        """Short stable id of the options; equal fingerprints give equal token streams."""
        uses_jieba = self.cjk in ("jieba", "jieba+bigram")
        desc = (
            f"v{_VERSION};cjk={self.cjk};stem={int(self.stem)};stop={int(self.stopwords)};"
            f"parts={int(self.code_parts)};jieba={self.jieba_mode if uses_jieba else '-'}"
        )
        if self.stopwords:
            stop_digest = "\n".join(sorted(ENGLISH_STOPWORDS | CHINESE_STOPWORDS))
            desc += ";sw=" + hashlib.sha256(stop_digest.encode()).hexdigest()[:8]
        return "tok-" + hashlib.sha256(desc.encode()).hexdigest()[:16]

    def __call__(self, text: str) -> list[str]:
        if not text:
            return []
        text = unicodedata.normalize("NFKC", text).lower()
        out: list[str] = []
        for match in _TOKEN_RE.finditer(text):
            cjk_run = match.group("cjk")
            if cjk_run is not None:
                self._add_cjk(cjk_run, out)
            else:
                self._add_latin(match.group("latin"), out)
        return out

    # -- Latin / code
    def _word(self, word: str) -> str | None:
        """A plain word after stopword removal and stemming (None when dropped)."""
        if self.stopwords and word in ENGLISH_STOPWORDS:
            return None
        if not self.stem or word.isdigit():
            return word
        stemmed = self._stem_cache.get(word)
        if stemmed is None:
            if self._stemmer is None:
                import Stemmer

                self._stemmer = Stemmer.Stemmer("english")
            stemmed = self._stemmer.stemWord(word)
            if len(self._stem_cache) < 200_000:
                self._stem_cache[word] = stemmed
        return stemmed

    def _add_latin(self, token: str, out: list[str]) -> None:
        if _PLAIN_WORD_RE.fullmatch(token) and "_" not in token:
            word = self._word(token)
            if word is not None:
                out.append(word)
            return
        if not any(ch.isalnum() for ch in token):
            return
        out.append(token)
        if not self.code_parts:
            return
        for segment in _SEGMENT_SPLIT_RE.split(token):
            segment = segment.strip("._-+#")
            if segment and segment != token and _HAS_CONNECTOR_RE.search(segment):
                out.append(segment)
        for piece in _ALNUM_RE.findall(token):
            if len(piece) < 2:
                continue
            word = self._word(piece)
            if word is not None:
                out.append(word)

    # -- CJK
    def _add_cjk(self, run: str, out: list[str]) -> None:
        terms: list[str] = []
        mode = self.cjk
        if mode in ("jieba", "jieba+bigram"):
            tok = _jieba()
            if self.jieba_mode == "search":
                terms.extend(tok.cut_for_search(run))
            else:
                terms.extend(tok.cut(run))
        if mode in ("bigram", "jieba+bigram"):
            terms.extend(_bigrams(run))
        if mode == "unigram+bigram":
            terms.extend(run)
            if len(run) > 1:
                terms.extend(_bigrams(run))
        if self.stopwords:
            out.extend(t for t in terms if t not in CHINESE_STOPWORDS)
        else:
            out.extend(terms)
