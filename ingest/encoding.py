"""Turn the raw bytes of a note file into text.

``decode_bytes`` detects the encoding, rejects binary data, strips a BOM,
normalises newlines and repairs mojibake; ``repair_mojibake`` is the repair
step on its own.

Encodings: UTF-8 (with or without BOM), UTF-16/UTF-32 with a BOM, UTF-16
without a BOM (recognised by NUL bytes on one parity), GB18030 (a superset of
GBK and GB2312), Big5 and, as the last resort, cp1252. GB18030 and Big5 both
decode most Chinese byte strings without error, so the candidates are ranked
by a plausibility score: the log-likelihood of the decoded text under a
character unigram model (see ``_CharModel``).

Mojibake: UTF-8 text that was decoded as cp1252 (or Latin-1) and saved again.
In the lossless form every byte survives as a character and re-encoding
restores the text exactly. In the lossy form some byte values were dropped (or
replaced by '?' or U+FFFD): the five that cp1252 does not define (0x81, 0x8D,
0x8F, 0x90, 0x9D) always, and in real files often more: a real note folder also
lost 0x8E and 0x9E ('Ž', 'ž', absent from cp1252 before 1998) and 0xAD (the soft
hyphen, which editors drop as invisible). All of these are UTF-8 continuation
bytes, and lead bytes always survive, so every damaged character stays
locatable: its lead byte announces the sequence length.

Which byte values were lost is read off the document (``_infer_losses``): a
value that never occurs in the mojibake although UTF-8 Chinese of that length
would have produced it E times was lost with likelihood ratio e^E; a value that
occurs was not. Each value starts from a prior (the five: likely; 0x8E, 0x9E,
0xAD: often; the rest: rarely), so a short text still tries the likely ones,
each candidate paying the log-probability of the bytes it assumes lost.

A damaged sequence gets the characters its bytes could have been, and the
characters are chosen with their neighbours on a word lattice
(``_best_reading``): Viterbi over jieba's dictionary words that the candidates
can spell, scored by word log-probability, so 模型 beats 模友 and 环境 beats 灯境.
The word probabilities mix jieba's counts (newspaper-era text) with wordfreq's
Chinese list (web, subtitles, Wikipedia: closer to the words notes use, so 这台机器
beats 这小机器), weighted by ``_WORDFREQ_WEIGHT``.
Unigrams cannot tell 与, 中 and 不 apart once their last bytes (0x8E, 0xAD, 0x8D) are
all lost: the three then arrive as the same two bytes. Around such single-character
function words the lattice also scores the part-of-speech bigram of each word and the one
before it (``_read_pos_tables``: the word tags of jieba's dictionary, the tag transitions
of jieba's tagger), so that a preposition stands between two nouns and an adverb before
a verb; and after 在, 从 or 于 earlier in the clause a locative (中, 上, 里) gains
``_FRAME_BONUS`` (the 在…中 frame). The document prior below is not given to such a
sequence: 与, 中 and 不 are all common in any file.
In a document with enough damage, a second round adds the document's own
preference (``_document_prior``): the characters that a damaged sequence became
inside unambiguous dictionary words elsewhere in the file. Runs are only
touched when their bytes form UTF-8, so Latin-1 text stays as it is.
``REPAIR_VERSION`` changes whenever the repair can give a different result, so
that documents repaired by an older version are processed again.

The frequency tables come from jieba's word dictionary (``jieba/dict.txt``,
about 349k words with corpus counts). Character counts (for encoding
detection) are the summed counts of the words that contain a character; a
traditional character takes the larger of its own count and that of its
simplified form (the single-character mappings of ``zhconv``'s ``zh2Hans``
table), and words are looked up by their simplified form. Without zhconv,
Big5 detection of very short texts gets less reliable. The character table is
built on first use (about 0.3 s of CPU), the word table on the first lossy
repair (about 1.5 s with wordfreq's list; without wordfreq installed the word
table is jieba's alone and restores fewer characters, see the bench).

Measured with ``bench/bench_encoding.py`` (``bench/results/encoding.md``): see
there for the share of CJK characters restored under each loss pattern on
note-like text and on CMRC 2018 paragraphs, and for GB18030/Big5 detection.
``ftfy.fix_encoding`` restores the lossless form too but not the lossy one, so
it adds nothing here and is not used.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rag.errors import BinaryFileError, EncodingError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["REPAIR_VERSION", "Decoded", "decode_bytes", "repair_mojibake"]

# Bumped whenever ``repair_mojibake`` can give a different result for the same input, so that
# documents repaired by an older version are processed again.
REPAIR_VERSION = 4


@dataclass(frozen=True)
class Decoded:
    """Decoded text of one file, the encoding that fitted and remarks for the ingest report."""

    text: str
    encoding: str
    notes: tuple[str, ...]


# ---------------------------------------------------------------------------
# Character model
# ---------------------------------------------------------------------------

# Log-probabilities for common punctuation: orders of magnitude of their share of
# characters in Chinese prose (measured on the CMRC 2018 dev paragraphs: '，' 3.8 %,
# '。' 2.3 %, '、' 1.1 %, brackets and quotes 0.1-0.6 %), rounded to three tiers.
_PUNCT_TIERS: tuple[tuple[float, str], ...] = (
    (-3.5, "，。"),
    (-5.5, "、（）：；“”《》「」！？"),
    (-7.5, "‘’『』【】〈〉〔〕—…·－／～％＋＝＊＃＆＠・．　─│"),
    # Western typography, as cp1252 text has it (same tier: about 1 in 1000 characters).
    (-7.5, "–•°€£¥©®™±×«»§¶¿¡½¼¾µ´\xa0"),
)
_LOGP_ASCII = -4.0
_LOGP_LATIN_IN_WORD = -7.0  # an accented letter next to an ASCII letter (café, Müller)
_LOGP_LONE_CJK = -7.0  # extra cost of a CJK character with no CJK character next to it
_LOGP_LETTER = -12.0  # any other letter or digit outside CJK
_LOGP_SYMBOL = -14.0  # symbols, other punctuation, spaces
_LOGP_FORMAT = -18.0  # format characters (ZWJ, soft hyphen, ...)
_LOGP_INVALID = -30.0  # controls, unassigned, private use, surrogates, U+FFFD


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x3134F
    )


class _CharModel:
    """Character unigram log-probabilities (and, after ``load_words``, word log-probabilities)."""

    def __init__(
        self, counts: dict[str, float], total: float, trad_forms: frozenset[str], simp_forms: frozenset[str]
    ) -> None:
        self.total = total
        self.trad_forms = trad_forms  # characters that simplify to another character (們, 對)
        self.simp_forms = simp_forms  # characters with a different traditional form (们, 对)
        self._floor = math.log(0.5 / total)
        self._logp: dict[str, float] = {c: math.log(n / total) for c, n in counts.items()}
        for logp, chars in _PUNCT_TIERS:
            for c in chars:
                self._logp[c] = logp
        self._base_logp = dict(self._logp)
        self.known = frozenset(self._logp)  # characters of jieba's dictionary and common punctuation
        self.script_forms = trad_forms | simp_forms
        self.to_simplified: dict[str, str] = {}  # single-character zhconv map (traditional -> simplified)
        self._words_loaded = False
        self.word_logp: dict[str, float] = {}
        # Proper prefixes of dictionary words -> the characters that may follow them.
        self.word_next: dict[str, str] = {}
        self._word_floor = 0.0
        self._single: dict[str, float] = {}
        # Part-of-speech tag of each dictionary word (index into the tag list) and the tag
        # bigram table of ``_read_pos_tables``.
        self.word_tag: dict[str, int] = {}
        self.pos_pmi: list[list[float]] = []
        self.pos_function: list[bool] = []  # per state: a single-character function word
        self.locative: frozenset[str] = frozenset()  # single characters tagged f (中, 上, 里 ...)
        self.function_chars: frozenset[str] = frozenset()  # single characters of _FUNCTION_TAGS
        self._byte_share: dict[int, float] | None = None

    def logp(self, c: str) -> float:
        """Unigram log-probability of one character (cached per character)."""
        v = self._logp.get(c)
        if v is None:
            v = self._fallback(c)
            self._logp[c] = v
        return v

    def _fallback(self, c: str) -> float:
        cp = ord(c)
        if cp < 0x80:
            return _LOGP_ASCII
        if _is_cjk(cp):
            return self._floor
        cat = unicodedata.category(c)
        if cp == 0xFFFD or cat in ("Cc", "Cn", "Co", "Cs"):
            return _LOGP_INVALID
        if cat == "Cf":
            return _LOGP_FORMAT
        if cat[0] in "LN":
            return _LOGP_LETTER
        return _LOGP_SYMBOL

    def text_score(self, text: str) -> float:
        """Log-likelihood of ``text`` under the unigram model (sum over characters).

        Accented Latin letters next to an ASCII letter get ``_LOGP_LATIN_IN_WORD``
        instead of the generic letter prior, so that Western text decoded as cp1252
        competes fairly with a CJK reading of the same bytes.
        """
        score = 0.0
        for c, n in Counter(text).items():
            score += n * self.logp(c)
        in_word = len(_LATIN_IN_WORD_RE.findall(text))
        lone = len(_LONE_CJK_RE.findall(text))
        return score + in_word * (_LOGP_LATIN_IN_WORD - _LOGP_LETTER) + lone * _LOGP_LONE_CJK

    # -- words (lossy repair only) --------------------------------------------------

    def load_words(self) -> None:
        """Word log-probabilities and word prefixes from jieba's dictionary (about 1 s, once)."""
        if self._words_loaded:
            return
        words, counts, tags = _read_jieba_dict()
        total = float(counts.sum())
        log_total = math.log(total)
        share: dict[str, float] = {}
        for w, n in zip(words, counts.tolist(), strict=True):
            if n > 0:
                share[w] = n / total
        web = _read_wordfreq()
        if web:  # a mixture of the two: jieba's counts with the weight 1 - _WORDFREQ_WEIGHT
            for w in share:
                share[w] *= 1.0 - _WORDFREQ_WEIGHT
            for w, f in web.items():
                share[w] = share.get(w, 0.0) + _WORDFREQ_WEIGHT * f
        logp: dict[str, float] = {}
        following: dict[str, set[str]] = {}
        for w, p in share.items():
            logp[w] = _WORD_SCALE * math.log(p) + _TOKEN_COST
            for k in range(1, len(w)):
                following.setdefault(w[:k], set()).add(w[k])
        self.word_logp = logp
        self.word_next = {p: "".join(sorted(cs)) for p, cs in following.items()}
        self._word_floor = math.log(0.5) - log_total
        self.word_tag, self.pos_pmi, self.pos_function = _read_pos_tables(words, tags)
        self.locative = frozenset(w for w, t in zip(words, tags, strict=True) if t == "f" and len(w) == 1)
        self.function_chars = frozenset(
            w for w, t in zip(words, tags, strict=True) if t in _FUNCTION_TAGS and len(w) == 1
        )
        self._words_loaded = True

    def single_logp(self, c: str) -> float:
        """Log-probability of ``c`` as a word of its own (dictionary count, else a floor).

        A CJK character that the dictionary does not list as a word costs
        ``_LOGP_UNKNOWN_CJK_WORD`` more than its character frequency suggests; other
        characters (punctuation, Latin letters) take their character log-probability.
        """
        v = self._single.get(c)
        if v is None:
            key = self.to_simplified.get(c, c)
            lp = self.word_logp.get(key)
            if lp is not None and len(key) == 1:
                v = lp
            elif _is_cjk(ord(c)):
                v = _WORD_SCALE * max(self._word_floor, self.logp(c) + _LOGP_UNKNOWN_CJK_WORD) + _TOKEN_COST
            else:
                v = _WORD_SCALE * self.logp(c) + _TOKEN_COST
            self._single[c] = v
        return v

    def byte_share(self) -> dict[int, float]:
        """Expected share of each continuation byte value among those of UTF-8 Chinese text."""
        if self._byte_share is None:
            weights: dict[int, float] = dict.fromkeys(range(0x80, 0xC0), 0.0)
            for c, lp in self._base_logp.items():
                if ord(c) >= 0x800:
                    p = math.exp(lp)
                    for b in c.encode("utf-8")[1:]:
                        weights[b] += p
            total = sum(weights.values())
            self._byte_share = {b: w / total for b, w in weights.items()}
        return self._byte_share


_LATIN_IN_WORD_RE = re.compile(r"(?<=[A-Za-z])[À-ÖØ-öø-ÿ]|[À-ÖØ-öø-ÿ](?=[A-Za-z])")
# A lone CJK character, with no CJK neighbour: what a GB18030 or Big5 reading of cp1252 text
# makes of "°C" or "µM" (a high byte and the ASCII byte after it); rare in real Chinese text.
_CJK_CLASS = "\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef"
_LONE_CJK_RE = re.compile(f"(?<![{_CJK_CLASS}])[\u3400-\u9fff\uf900-\ufaff](?![{_CJK_CLASS}])")


def _read_wordfreq() -> dict[str, float]:
    """wordfreq's Chinese word frequencies (its "large" list), words of CJK characters only.

    Empty when wordfreq is not installed; the word model then rests on jieba's counts alone.
    """
    try:
        import wordfreq
    except ModuleNotFoundError:
        return {}
    freqs: dict[str, float] = wordfreq.get_frequency_dict("zh", "large")
    return {w: f for w, f in freqs.items() if all(_is_cjk(ord(c)) for c in w)}


def _read_jieba_dict() -> tuple[list[str], npt.NDArray[np.int64], list[str]]:
    """Words, counts and part-of-speech tags of jieba's dictionary (``word count tag`` per line)."""
    import importlib.resources

    import numpy as np

    data = importlib.resources.files("jieba").joinpath("dict.txt").read_text(encoding="utf-8")
    fields = data.split()
    return fields[0::3], np.array(fields[1::3], dtype=np.int64), fields[2::3]


def _read_pos_tables(
    words: list[str], word_tags: list[str]
) -> tuple[dict[str, int], list[list[float]], list[bool]]:
    """Word tags from jieba's dictionary and a tag bigram table from its tagger's HMM.

    jieba's part-of-speech tagger (``jieba.posseg``) is an HMM over (B/M/E/S, tag) states
    trained on tagged newspaper text. Its transitions from a word's last state (E or S)
    to the next word's first one (B or S) are tag bigram probabilities, and its start
    probabilities those of a sentence's first word. Returned: the tag index of each
    dictionary word (``words`` with their tags ``word_tags``), ``pmi[prev][next]``: log P(next | prev) - log P(next), clipped to
    ``_POS_PMI_LOW`` .. ``_POS_PMI_HIGH``, where a state is 2 * tag (single-character word) or 2 * tag + 1
    (longer word), and row ``2 * len(tags)`` is the start of a sentence. P(next) is the
    share of ``next`` among first states of words, from the chain's stationary distribution.
    The third item tells which states are single-character words of ``_FUNCTION_TAGS``.
    """
    import ast
    import importlib.resources

    import numpy as np

    pkg = importlib.resources.files("jieba")
    State = tuple[str, str]  # (B/M/E/S, tag)

    def table(name: str) -> dict[State, Any]:
        src = pkg.joinpath("posseg", name).read_text(encoding="utf-8")
        parsed: dict[State, Any] = ast.literal_eval(src.split("=", 1)[1])
        return parsed

    trans: dict[State, dict[State, float]] = table("prob_trans.py")
    start: dict[State, float] = table("prob_start.py")
    states = sorted(trans)
    tags = sorted({tag for _, tag in states})
    tag_index = {t: i for i, t in enumerate(tags)}
    index = {st: i for i, st in enumerate(states)}
    matrix = np.zeros((len(states), len(states)))
    for a, row in trans.items():
        for b, lp in row.items():
            matrix[index[a], index[b]] = math.exp(lp)
    matrix /= np.maximum(matrix.sum(axis=1, keepdims=True), 1e-300)
    pi = np.full(len(states), 1.0 / len(states))
    for _ in range(200):
        pi = pi @ matrix
    n = 2 * len(tags)

    def code(state: State, first: bool) -> int | None:
        kind, tag = state
        if kind == "M" or (first and kind == "E") or (not first and kind == "B"):
            return None
        return 2 * tag_index[tag] + (kind != "S")

    boundary = np.zeros((n + 1, n))
    for a, row in trans.items():
        i = code(a, first=False)
        if i is None:
            continue
        for b, lp in row.items():
            j = code(b, first=True)
            if j is not None:
                boundary[i, j] += pi[index[a]] * math.exp(lp)
    for b, lp in start.items():
        j = code(b, first=True)
        if j is not None and lp > -1e10:  # jieba writes -3.14e100 for impossible
            boundary[n, j] = math.exp(lp)
    marginal = boundary[:n].sum(axis=0)
    marginal /= marginal.sum()
    rows = boundary / np.maximum(boundary.sum(axis=1, keepdims=True), 1e-300)
    lo, hi = _POS_PMI_LOW, _POS_PMI_HIGH
    with np.errstate(divide="ignore"):
        pmi = np.clip(np.log(rows) - np.log(np.maximum(marginal, 1e-300)), lo, hi)
    pmi[:, marginal == 0] = 0.0
    pmi *= _POS_WEIGHT
    word_tag = {w: tag_index[t] for w, t in zip(words, word_tags, strict=True) if t in tag_index}
    function = [False] * (n + 1)
    for t, tag in enumerate(tags):
        function[2 * t] = tag in _FUNCTION_TAGS
    return word_tag, pmi.tolist(), function


@functools.cache
def _model() -> _CharModel:
    import numpy as np

    words, counts, _ = _read_jieba_dict()
    cps = np.frombuffer("".join(words).encode("utf-32-le"), dtype=np.uint32)
    lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    per_cp = np.bincount(cps, weights=np.repeat(counts, lens))
    nz = np.flatnonzero(per_cp)
    table = dict(zip(map(chr, nz.tolist()), per_cp[nz].tolist(), strict=True))
    total = float(per_cp.sum())
    merged = {c: n for c, n in table.items() if _is_cjk(ord(c))}
    t2s, s2t = _script_maps()
    for trad, simp in t2s.items():
        n = max(table.get(trad, 0.0), table.get(simp, 0.0))
        if n > 0:
            merged[trad] = n
    model = _CharModel(merged, total, frozenset(t2s), frozenset(s2t))
    model.to_simplified = t2s
    return model


def _script_maps() -> tuple[dict[str, str], dict[str, str]]:
    """Single-character traditional->simplified and simplified->traditional maps from zhconv.

    Empty when zhconv is not installed; traditional text is then scored with the
    (lower) counts that jieba's dictionary has for traditional characters.
    """
    try:
        import importlib.resources
        import json

        raw = importlib.resources.files("zhconv").joinpath("zhcdict.json").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return {}, {}
    tables = json.loads(raw)

    def single(table: dict[str, str]) -> dict[str, str]:
        return {
            a: b
            for a, b in table.items()
            if len(a) == 1 and len(b) == 1 and a != b and _is_cjk(ord(a)) and _is_cjk(ord(b))
        }

    return single(tables["zh2Hans"]), single(tables["zh2Hant"])


# ---------------------------------------------------------------------------
# Mojibake repair
# ---------------------------------------------------------------------------

_CP1252_UNDEFINED = bytes([0x81, 0x8D, 0x8F, 0x90, 0x9D])
# cp1252 characters of 0x80-0x9F (the rest of 0x80-0xFF is Latin-1) -> their byte as a Latin-1 char.
_CP1252_SPECIALS = {
    ord(bytes([b]).decode("cp1252")): chr(b) for b in range(0x80, 0xA0) if b not in _CP1252_UNDEFINED
}
_PH_FFFD = "\xff"  # U+FFFD standing for a lost byte (0xFF never occurs in UTF-8)
_PH_QMARK = "\xfe"  # '?' standing for a lost byte (0xFE never occurs in UTF-8)
_TO_BYTES = {**_CP1252_SPECIALS, 0xFFFD: _PH_FFFD}
_TO_BYTES_Q = {**_TO_BYTES, ord("?"): _PH_QMARK}
_PLACEHOLDERS = _PH_FFFD + _PH_QMARK

# A run of characters that could be the cp1252 reading of UTF-8 bytes: Latin-1 0x80-0xFD
# (0xFE/0xFF never occur in UTF-8), the cp1252 specials, U+FFFD and '?'.
_RUN_RE = re.compile("[\x80-\xfd" + "".join(re.escape(chr(c)) for c in _CP1252_SPECIALS) + "\ufffd?]+")
# Tokens over the byte string of a run (held as Latin-1 chars): a stretch of valid UTF-8
# multi-byte sequences, a damaged sequence (lead byte + up to len-1 continuation bytes or
# placeholders), or any other single byte.
_VALID_SEQ = (
    "(?:[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    "|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    "|\xf4[\x80-\x8f][\x80-\xbf]{2})"
)
_TOKEN_RE = re.compile(
    f"(?P<valid>{_VALID_SEQ}+)"
    "|(?P<broken>[\xc2-\xdf][\xfe\xff]?|[\xe0-\xef][\x80-\xbf\xfe\xff]{0,2}|[\xf0-\xf4][\x80-\xbf\xfe\xff]{0,3})"
    "|(?P<other>.)",
    re.DOTALL,
)
# Characters a repair must not produce: C0 controls, surrogates, private use. (C1 controls are
# allowed: text mangled twice holds them after the first pass, and the second pass removes them.)
_IMPLAUSIBLE_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ue000-\uf8ff]")
_MAX_PASSES = 3  # text mangled twice needs two passes

# Which bytes were lost. Every UTF-8 continuation byte (0x80-0xBF) could have been, so each
# gets a prior probability from how files lose bytes: the five bytes cp1252 leaves undefined
# are lost by most conversions; 0x8E and 0x9E ('Ž', 'ž', absent from cp1252 before 1998) and
# 0xAD (the soft hyphen, which editors and browsers drop as invisible) are lost often; the
# rest rarely. The document then tells: a byte value that never
# occurs although UTF-8 Chinese of that length would have produced it E times has lost it with
# likelihood ratio e^E (a Poisson count of zero), and a byte value that occurs was not lost.
_LOSS_PRIOR_UNDEFINED = 0.9
_LOSS_PRIOR_OFTEN = 0.3
_LOSS_PRIOR_SOMETIMES = 0.05  # 0x80 ('€', also new in 1998) and 0xA0 (no-break space)
_LOSS_PRIOR_RARE = 0.001
_LOST_OFTEN = frozenset({0x8E, 0x9E, 0xAD})
_LOST_SOMETIMES = frozenset({0x80, 0xA0})
# A byte value below this posterior probability of having been lost is not tried (keeps the
# candidate lists short: a bare lead byte of a 3-byte character and 8 lost values give 64).
_MIN_LOSS_POSTERIOR = 0.01
# The expected count of a byte value is discounted by this factor: the byte shares come from
# Chinese prose, and notes hold more Latin letters and punctuation than prose does.
_EXPECTED_COUNT_DISCOUNT = 0.5

# Word lattice: a damaged character is chosen together with its neighbours.
_WINDOW = 3  # undamaged characters on each side of a damaged one that take part in the choice
_LOGP_UNKNOWN_CJK_WORD = -3.0  # extra cost of a CJK character that is not a word on its own
_WORD_SCALE = 1.0  # weight of the word log-probabilities
# Share of wordfreq's frequencies in the word probabilities (the rest: jieba's counts).
_WORDFREQ_WEIGHT = 0.75
# Cost of each word on the path: favours readings that form dictionary words over readings
# made of frequent single characters (步数 over 来+数).
_TOKEN_COST = -3.0
# Tag bigrams (``_read_pos_tables``): weight of log P(tag | previous tag) - log P(tag), clipped.
_POS_WEIGHT = 0.6
_POS_PMI_LOW = -3.0
_POS_PMI_HIGH = 3.0
# Tags of closed-class words (prepositions, conjunctions, locatives, adverbs, particles,
# modal particles, affixes, interjections): the tag bigram only scores the transitions into
# and out of such a word when it is a single character (与 中 不 的 了 在 也 ...). Between
# content words it added as many errors as it removed.
_FUNCTION_TAGS = frozenset({"p", "c", "f", "d", "u", "uj", "ul", "uz", "ud", "ug", "uv", "y", "k", "h", "e"})


def _loss_prior(b: int) -> float:
    if b in _CP1252_UNDEFINED:
        return _LOSS_PRIOR_UNDEFINED
    if b in _LOST_OFTEN:
        return _LOSS_PRIOR_OFTEN
    if b in _LOST_SOMETIMES:
        return _LOSS_PRIOR_SOMETIMES
    return _LOSS_PRIOR_RARE


@dataclass(frozen=True)
class _Losses:
    """The byte values that may have been lost in one document, with their log-probabilities."""

    values: tuple[int, ...]  # ascending
    logp: tuple[float, ...]  # log posterior probability that each value was lost

    def penalty(self, fill: tuple[int, ...]) -> float:
        if len(fill) == 1:
            return self.logp[self.values.index(fill[0])]
        index = self.values.index
        return sum(self.logp[index(b)] for b in fill)


def _infer_losses(counts: dict[int, int], slots: int, share: dict[int, float]) -> _Losses:
    """Posterior of each continuation byte value having been lost, from the document's counts.

    ``counts`` maps each continuation byte value to its occurrences in the mojibake runs,
    ``slots`` is the number of lost byte positions (missing bytes plus placeholders) and
    ``share`` the expected share of each value among the continuation bytes of UTF-8
    Chinese. A value that occurs was not lost; one that never occurs was lost with
    posterior odds prior_odds * e^E, E = its expected count. Values below
    ``_MIN_LOSS_POSTERIOR`` are left out.
    """
    total = sum(counts.values()) + slots
    values: list[int] = []
    logps: list[float] = []
    for b in range(0x80, 0xC0):
        if counts.get(b, 0):
            continue
        prior = _loss_prior(b)
        expected = min(_EXPECTED_COUNT_DISCOUNT * total * share.get(b, 0.0), 50.0)
        odds = prior / (1.0 - prior) * math.exp(expected)
        posterior = odds / (1.0 + odds)
        if posterior >= _MIN_LOSS_POSTERIOR:
            values.append(b)
            logps.append(round(math.log(posterior), 1))  # rounded: documents share cached candidates
    return _Losses(tuple(values), tuple(logps))


def _count_non_ascii(text: str) -> int:
    return len(text) - len(text.encode("ascii", errors="ignore"))


@dataclass
class _RunParse:
    start: int
    end: int
    line: int
    pieces: list[tuple[str, str]]  # ("text", decoded text) | ("broken", raw bytes as Latin-1 chars)
    seq: str = ""  # bytes of the complete and damaged sequences (Latin-1 chars)
    slots: int = 0  # lost byte positions: missing bytes and placeholders
    valid: int = 0  # complete multi-byte sequences
    broken: int = 0  # damaged sequences with at least one continuation byte or placeholder
    lone: int = 0  # damaged sequences that are a bare lead byte
    invalid: int = 0  # bytes that cannot belong to UTF-8 mojibake
    followed_by_qmark: int = 0  # damaged sequences directly followed by '?'


@dataclass
class _RepairStats:
    restored: int = 0  # non-ASCII characters produced
    consumed: int = 0  # non-ASCII characters of mojibake replaced
    reconstructed: int = 0
    qmark_mode: bool = False
    lost: tuple[int, ...] = ()  # byte values found lost (those tried with posterior > 0.5)


def _seq_length(lead: int) -> int:
    return 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


def _parse_run(run: str, start: int, line: int, table: dict[int, str]) -> _RunParse:
    raw = run.translate(table)
    parse = _RunParse(start, start + len(run), line, [])
    try:
        text = raw.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:  # lossless: the whole run is valid UTF-8
        parse.pieces.append(("text", text))
        parse.seq = raw
        parse.valid = _count_non_ascii(text)
        return parse
    seq: list[str] = []
    for m in _TOKEN_RE.finditer(raw):
        kind = m.lastgroup
        tok = m.group()
        if kind == "valid":
            decoded = tok.encode("latin-1").decode("utf-8")
            parse.pieces.append(("text", decoded))
            parse.valid += len(decoded)
            seq.append(tok)
        elif kind == "broken":
            parse.pieces.append(("broken", tok))
            seq.append(tok)
            placeholders = sum(c in _PLACEHOLDERS for c in tok)
            parse.slots += _seq_length(ord(tok[0])) - len(tok) + placeholders
            if len(tok) == 1:
                parse.lone += 1
            else:
                parse.broken += 1
            if raw.startswith("?", m.end()):
                parse.followed_by_qmark += 1
        else:
            if tok in _PLACEHOLDERS:
                tok = "?" if tok == _PH_QMARK else "\ufffd"
            elif tok != "?":
                parse.invalid += 1
            parse.pieces.append(("text", tok))
    parse.seq = "".join(seq)
    return parse


@functools.lru_cache(maxsize=8192)
def _candidates(tok: str, lost: tuple[int, ...]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Characters whose UTF-8 bytes fit a damaged sequence, each with the lost bytes it assumes.

    ``tok`` is the lead byte and the present continuation bytes or placeholders; a missing
    byte may sit in any slot, and it and a placeholder may be any of ``lost``. A character
    reachable in several ways keeps the first, which assumes the fewest and lowest bytes.
    """
    lead = ord(tok[0])
    length = _seq_length(lead)
    items = [ord(c) for c in tok[1:]]
    missing = length - 1 - len(items)
    found: dict[str, tuple[int, ...]] = {}
    for slots in itertools.combinations(range(length - 1), missing):
        seq: list[int | None] = [None] * (length - 1)
        rest = iter(items)
        for i in range(length - 1):
            if i not in slots:
                seq[i] = next(rest)
        options = [lost if b is None or b in (0xFE, 0xFF) else (b,) for b in seq]
        unknown = [i for i, b in enumerate(seq) if b is None or b in (0xFE, 0xFF)]
        for combo in itertools.product(*options):
            try:
                c = bytes((lead, *combo)).decode("utf-8")
            except UnicodeDecodeError:
                continue
            if c not in found:
                found[c] = tuple(combo[i] for i in unknown)
    return tuple(sorted(found.items()))


_PAIRS = {"」": "「", "』": "『", "】": "【", "〉": "〈", "》": "《", "）": "（", "”": "“", "’": "‘"}
_OPENERS = {o: c for c, o in _PAIRS.items()}
_BRACKETS = frozenset(_PAIRS) | frozenset(_OPENERS)
_BRACKET_RE = re.compile("[" + "".join(sorted(_BRACKETS)) + "]")
_SCRIPT_PENALTY = -6.0  # a traditional form in simplified text, or the other way round
_BRACKET_BONUS = 3.0  # a closing bracket whose opening one is open before it

# Candidates of one position: (character, dictionary key, penalty, penalty + single-character score).
_Cands = tuple[tuple[str, str, float, float], ...]


@functools.lru_cache(maxsize=1 << 16)
def _token_options(
    tok: str, lost: tuple[int, ...]
) -> tuple[tuple[str, str, float, bool, tuple[int, ...]], ...]:
    """Plausible candidates of a damaged sequence as (char, dictionary key, single-character
    score, whether the script or bracket context adjusts it, the lost bytes it assumes).

    Controls, unassigned code points and CJK characters that jieba's dictionary never
    uses are left out: the first are never text, the last never win against a character
    the dictionary knows, and they make the lattice wider (a bare lead byte with eight
    lost values has 64 candidates). When nothing is left, the unassigned and rare ones
    come back, so that a rare character can still be restored.
    """
    model = _model()
    simp = model.to_simplified
    known = model.known
    out = []
    spare = []
    for c, fill in _candidates(tok, lost):
        lp = model.logp(c)
        if lp <= _LOGP_INVALID:
            continue
        entry = (c, simp.get(c, c), model.single_logp(c), c in _BRACKETS or c in model.script_forms, fill)
        if c in known or (lp >= _LOGP_SYMBOL and not _is_cjk(ord(c))):
            out.append(entry)
        else:
            spare.append(entry)
    return tuple(out or spare)


class _Brackets:
    """Which bracket pairs are open at the current position of the output."""

    def __init__(self, text: str = "") -> None:
        self.open: dict[str, bool] = dict.fromkeys(_OPENERS, False)
        self.update(text)

    def update(self, text: str) -> None:
        if not _BRACKET_RE.search(text):
            return
        for opener, closer in _OPENERS.items():
            i_open, i_close = text.rfind(opener), text.rfind(closer)
            if i_open != i_close:  # both -1 when neither occurs
                self.open[opener] = i_open > i_close


def _context_logp(c: str, brackets: _Brackets, model: _CharModel, script: str | None) -> float:
    """Adjustments from the surroundings: the text's script and bracket balance."""
    adj = 0.0
    if (script == "hans" and c in model.trad_forms) or (script == "hant" and c in model.simp_forms):
        adj += _SCRIPT_PENALTY
    opener = _PAIRS.get(c)
    if opener is not None:
        adj += _BRACKET_BONUS if brackets.open[opener] else -_BRACKET_BONUS
    elif c in _OPENERS and brackets.open[c]:
        adj -= _BRACKET_BONUS
    return adj


_NEUTRAL = -1  # lattice state of a character without a tag (Latin letters, digits, rare CJK)


def _best_reading(model: _CharModel, cands: list[_Cands]) -> list[tuple[str, ...]]:
    """The best reading of a window: with tag bigrams when a damaged position may be a
    single-character function word (与, 中, 不), else under the word unigram model alone."""
    function = model.function_chars
    if _POS_WEIGHT and any(len(opts) > 1 and any(o[1] in function for o in opts) for opts in cands):
        return _best_reading_tagged(model, cands)
    return _best_reading_unigram(model, cands)


def _longer_words(
    model: _CharModel, cands: list[_Cands], j: int, frontier: list[tuple[str, float, tuple[str, ...]]]
) -> Iterator[tuple[int, str, float, tuple[str, ...]]]:
    """The dictionary words that extend ``frontier`` (prefixes of words ending before position
    ``j``, each with its score so far and its characters) over the candidates from ``j`` on:
    (end position, word, score + the candidates' penalties + the word's log-probability,
    characters), in lattice order (shorter words first, candidates in code-point order)."""
    n = len(cands)
    words = model.word_logp
    following = model.word_next
    while frontier and j < n:
        grown: list[tuple[str, float, tuple[str, ...]]] = []
        for prefix, score, chars in frontier:
            nxt = following[prefix]
            for c, key, pen, _ in cands[j]:
                if key not in nxt:
                    continue
                word = prefix + key
                lp = words.get(word)
                if lp is not None:
                    yield j + 1, word, score + pen + lp, (*chars, c)
                if word in following:
                    grown.append((word, score + pen, (*chars, c)))
        frontier = grown
        j += 1


def _best_reading_tagged(model: _CharModel, cands: list[_Cands]) -> list[tuple[str, ...]]:
    """As ``_best_reading_unigram``, plus the tag bigram of each word and the word before it.

    A lattice state is the tag state of the last word (``_read_pos_tables``), the start
    of a sentence after punctuation or a space, or ``_NEUTRAL`` after an untagged
    character (which adds nothing to the next word's score).
    """
    n = len(cands)
    following = model.word_next
    tags = model.word_tag
    pmi = model.pos_pmi
    boundary = len(pmi) - 1
    function = model.pos_function
    best: list[dict[int, float]] = [{} for _ in range(n + 1)]
    back: list[dict[int, tuple[int, int, tuple[str, ...]]]] = [{} for _ in range(n + 1)]
    best[0][_NEUTRAL] = 0.0
    entry: list[dict[int, tuple[float, int]]] = [{} for _ in range(n + 1)]

    def enter(i: int, state: int) -> tuple[float, int]:
        """Best score at ``i`` followed by a word whose first state is ``state``."""
        got = entry[i].get(state)
        if got is None:
            here = i < n and len(cands[i]) > 1  # the next word starts on a damaged position
            just_before = i > 0 and len(cands[i - 1]) > 1  # a single-character word ended on one
            top, arg = -math.inf, _NEUTRAL
            for prev, sc in best[i].items():
                if (
                    prev != _NEUTRAL
                    and state >= 0
                    and ((function[state] and here) or (function[prev] and just_before))
                ):
                    sc += pmi[prev][state]
                if sc > top:
                    top, arg = sc, prev
            got = entry[i][state] = (top, arg)
        return got

    def relax(i: int, j: int, word: str, score: float, chars: tuple[str, ...]) -> None:
        t = tags.get(word)
        if t is None:
            first = _NEUTRAL
            last = boundary if not _is_cjk(ord(word[0])) and not word.isalnum() else _NEUTRAL
        else:
            first = last = 2 * t + (len(word) > 1)
        base, prev = enter(i, first)
        if base + score > best[j].get(last, -math.inf):
            best[j][last] = base + score
            back[j][last] = (i, prev, chars)

    for i in range(n):
        if not best[i]:
            continue
        frontier: list[tuple[str, float, tuple[str, ...]]] = []
        for c, key, pen, single in cands[i]:
            relax(i, i + 1, key, single, (c,))
            if key in following:
                frontier.append((key, pen, (c,)))
        for end, word, score, chars in _longer_words(model, cands, i + 1, frontier):
            relax(i, end, word, score, chars)
    out: list[tuple[str, ...]] = []
    j = n
    state = max(best[n], key=lambda st: best[n][st])
    while j > 0:
        i, prev, chars = back[j][state]
        out.append(chars)
        j, state = i, prev
    out.reverse()
    return out


def _best_reading_unigram(model: _CharModel, cands: list[_Cands]) -> list[tuple[str, ...]]:
    """The most probable characters for a stretch of positions, under a word unigram model.

    ``cands`` holds the candidates of each position (one for an undamaged character) as
    (character, dictionary key, penalty, penalty + single-character score). Viterbi over
    a word lattice, as a dictionary segmenter does, except that a position may hold
    several characters: an edge is a dictionary word (or a single character) that one
    choice of candidates spells, scored by the word's log-probability plus the candidates'
    penalties; the best path through the stretch gives both the segmentation and the
    characters. Words are looked up by their simplified form (the key), so traditional
    text finds its words too (the script penalty keeps the forms apart). Candidates come
    in code-point order and only a strictly better score replaces a path, so ties keep
    the lower code points.
    """
    n = len(cands)
    following = model.word_next
    best = [-math.inf] * (n + 1)
    best[0] = 0.0
    back: list[tuple[int, tuple[str, ...]]] = [(0, ())] * (n + 1)
    for i in range(n):
        base = best[i]
        frontier: list[tuple[str, float, tuple[str, ...]]] = []
        for c, key, pen, single in cands[i]:
            if base + single > best[i + 1]:
                best[i + 1] = base + single
                back[i + 1] = (i, (c,))
            if key in following:
                frontier.append((key, base + pen, (c,)))
        for end, _, score, chars in _longer_words(model, cands, i + 1, frontier):
            if score > best[end]:
                best[end] = score
                back[end] = (i, chars)
    out: list[tuple[str, ...]] = []
    j = n
    while j > 0:
        i, chars = back[j]
        out.append(chars)
        j = i
    out.reverse()
    return out


# Readings of windows and entries of undamaged characters, shared by all documents: a window
# is keyed by its candidates with their scores, so a reading holds wherever the key recurs.
_WINDOWS: dict[tuple[_Cands, ...], list[tuple[str, ...]]] = {}
_FIXED: dict[str, tuple[str, str, float, float]] = {}
_OPTIONS: dict[tuple[object, ...], _Cands] = {}  # (sequence, brackets, losses, script) -> candidates
_MAX_MEMO = 50_000


@dataclass
class _PassCache:
    """Memo tables of one repair pass (the lost bytes, script and model are fixed within it)."""

    options: dict[tuple[object, ...], _Cands] = field(default_factory=dict)
    # Document prior (second round): damaged sequence -> character -> log-probability.
    prior: dict[str, dict[str, float]] = field(default_factory=dict)
    # Choices of the first round: (damaged sequence, character, (its word, offset), candidates).
    choices: list[tuple[str, str, tuple[tuple[str, ...], int], _Cands]] = field(default_factory=list)
    record: bool = False  # whether to note the choices (only when a second round may follow)
    rendered: dict[int, tuple[str | None, int]] = field(default_factory=dict)  # run -> (text, guessed)


def _options(
    model: _CharModel, tok: str, brackets: _Brackets, losses: _Losses, script: str | None, cache: _PassCache
) -> _Cands:
    """Candidates of a damaged sequence with their penalties in this context (memoised)."""
    prior = cache.prior.get(tok)
    memo = _OPTIONS if prior is None else cache.options
    memo_key = (tok, tuple(brackets.open.values()), losses, script)
    options = memo.get(memo_key)
    if options is None:
        built = []
        for c, key, single, context, fill in _token_options(tok, losses.values):
            pen = losses.penalty(fill)
            if context:
                pen += _context_logp(c, brackets, model, script)
            if prior is not None:
                pen += prior.get(c, 0.0)
            built.append((c, key, pen, pen + single))
        options = tuple(built)
        if len(memo) >= _MAX_MEMO:
            memo.clear()
        memo[memo_key] = options
    return options


def _read_window(
    model: _CharModel,
    cands: list[_Cands],
    chars: list[str],
    spans: dict[int, tuple[tuple[str, ...], int]],
    lo: int,
    hi: int,
    record: bool,
) -> None:
    """Choose the characters of positions lo..hi-1 (memoised by the window's candidates)."""
    window = tuple(cands[lo:hi])
    reading = _WINDOWS.get(window)
    if reading is None:
        if len(_WINDOWS) >= _MAX_MEMO:
            _WINDOWS.clear()
        reading = _WINDOWS[window] = _best_reading(model, cands[lo:hi])
    at = lo
    for word in reading:
        for off, c in enumerate(word):
            if record and len(word) > 1:
                spans[at] = (word, off)
            chars[at] = c
            at += 1


# Prepositions that open a locative frame closed by a locative word: 在…中, 从…里, 于…上.
_FRAME_OPENERS = frozenset("在从于")
_FRAME_REACH = 16  # characters back from a damaged one to look for the opener
_CLAUSE_END = frozenset("，。；：！？、,.;:!?\n（）()「」“”")
_FRAME_BONUS = 1.5
_FRAMED: dict[_Cands, _Cands] = {}


def _in_frame(chars: list[str], d: int, before: str, words: dict[str, float]) -> bool:
    """Whether an opener of a locative frame precedes position ``d`` in the same clause.

    The opener must stand as a word of its own (not 于 of 由于, 在 of 现在 or 在于) and
    something must stand between it and ``d``.
    """
    lo = max(0, d - _FRAME_REACH)
    prefix = "".join(chars[lo:d])
    if len(prefix) < _FRAME_REACH:
        prefix = before[len(prefix) - _FRAME_REACH :] + prefix
    for i in range(len(prefix) - 1, -1, -1):
        c = prefix[i]
        if c in _CLAUSE_END:
            return False
        if (
            c in _FRAME_OPENERS
            and i < len(prefix) - 1
            and prefix[i : i + 2] not in words
            and (i == 0 or prefix[i - 1 : i + 1] not in words)
        ):
            return True
    return False


_LOCATIVE_MEMO: dict[_Cands, bool] = {}


def _has_locative(options: _Cands, model: _CharModel) -> bool:
    got = _LOCATIVE_MEMO.get(options)
    if got is None:
        if len(_LOCATIVE_MEMO) >= _MAX_MEMO:
            _LOCATIVE_MEMO.clear()
        got = _LOCATIVE_MEMO[options] = any(o[1] in model.locative for o in options)
    return got


def _framed(options: _Cands, model: _CharModel) -> _Cands:
    """The candidates with a bonus for the single-character locatives (中, 上, 里, 内 ...)."""
    got = _FRAMED.get(options)
    if got is None:
        locative = model.locative
        got = tuple(
            (c, key, pen + _FRAME_BONUS, single + _FRAME_BONUS) if key in locative else (c, key, pen, single)
            for c, key, pen, single in options
        )
        if len(_FRAMED) >= _MAX_MEMO:
            _FRAMED.clear()
        _FRAMED[options] = got
    return got


def _render(
    parse: _RunParse,
    model: _CharModel | None,
    losses: _Losses,
    stats: _RepairStats,
    before: str,
    script: str | None,
    cache: _PassCache,
) -> str | None:
    """Decoded text of a run, or None when a damaged sequence has no plausible candidate."""
    if not (parse.broken or parse.lone):
        text = "".join(val for _, val in parse.pieces)
    else:
        assert model is not None
        simp = model.to_simplified
        fixed = _FIXED
        cands: list[_Cands] = []
        damaged: list[int] = []
        tokens: list[str] = []
        for kind, val in parse.pieces:
            if kind == "text":
                for c in val:
                    entry = fixed.get(c)
                    if entry is None:
                        entry = fixed[c] = (c, simp.get(c, c), 0.0, model.single_logp(c))
                    cands.append((entry,))
                continue
            damaged.append(len(cands))
            tokens.append(val)
            cands.append(())
        chars = [opts[0][0] if opts else "" for opts in cands]
        brackets = _Brackets(before)
        fed = 0  # characters before this position have been fed to ``brackets``
        spans: dict[int, tuple[tuple[str, ...], int]] = {}  # position -> (its word, offset in it)
        k = 0
        while k < len(damaged):  # windows of _WINDOW characters around damaged ones, merged
            first = k
            lo = max(0, damaged[k] - _WINDOW)
            hi = damaged[k] + _WINDOW + 1
            while k + 1 < len(damaged) and damaged[k + 1] - _WINDOW <= hi:
                k += 1
                hi = damaged[k] + _WINDOW + 1
            hi = min(hi, len(cands))
            state, fed_before = dict(brackets.open), fed
            for m in range(first, k + 1):
                # Bracket balance from everything decided before this sequence (earlier choices too).
                d = damaged[m]
                if fed < d:
                    seen = "".join(chars[fed:d])
                    if _BRACKET_RE.search(seen):
                        brackets.update(seen)
                    fed = d
                options = _options(model, tokens[m], brackets, losses, script, cache)
                if not options:
                    return None
                if (
                    _FRAME_BONUS
                    and _has_locative(options, model)
                    and _in_frame(chars, d, before, model.word_logp)
                ):
                    options = _framed(options, model)
                cands[d] = options
            _read_window(model, cands, chars, spans, lo, hi, cache.record)
            if k > first:
                # A later sequence of the window saw the earlier ones' first candidates: redo the
                # bracket balance with the characters chosen ("「锣鼓点」。身份、性格": after the
                # first 」 the pair is closed, so the second sequence is 、, not another 」).
                brackets.open, fed = state, fed_before
                changed = False
                for m in range(first, k + 1):
                    d = damaged[m]
                    seen = "".join(chars[fed:d])
                    if _BRACKET_RE.search(seen):
                        brackets.update(seen)
                    fed = d
                    options = _options(model, tokens[m], brackets, losses, script, cache)
                    if (
                        _FRAME_BONUS
                        and _has_locative(options, model)
                        and _in_frame(chars, d, before, model.word_logp)
                    ):
                        options = _framed(options, model)
                    if options != cands[d]:
                        cands[d] = options
                        changed = True
                if changed:
                    _read_window(model, cands, chars, spans, lo, hi, cache.record)
            k += 1
        if cache.record:
            cache.choices.extend(
                (tok, chars[d], spans.get(d, ((), 0)), cands[d])
                for tok, d in zip(tokens, damaged, strict=True)
            )
        stats.reconstructed += len(damaged)
        text = "".join(chars)
    if _IMPLAUSIBLE_RE.search(text):
        return None
    if len(text) <= 3 and any(unicodedata.category(c) == "Cn" for c in text):
        return None  # a short run that happens to be valid UTF-8 but means nothing ("×·")
    return text


def _script(model: _CharModel, texts: list[str]) -> str | None:
    """'hans' or 'hant' when the text clearly leans to one script, else None."""
    counts = Counter("".join(texts))
    trad = sum(n for c, n in counts.items() if c in model.trad_forms)
    simp = sum(n for c, n in counts.items() if c in model.simp_forms)
    if simp >= 3 * trad and simp:
        return "hans"
    if trad >= 3 * simp and trad:
        return "hant"
    return None


def _byte_counts(parses: list[_RunParse]) -> dict[int, int]:
    data = "".join(p.seq for p in parses).encode("latin-1")
    return {b: data.count(b) for b in range(0x80, 0xC0)}


_MIN_DOC_VALID = 10  # complete sequences a document needs before damaged-only lines count as mojibake


def _repair_pass(text: str) -> tuple[str, _RepairStats]:
    """One repair pass over every run of cp1252-range characters.

    The '?' reading (a '?' stands for a lost byte) is used when most damaged
    sequences are directly followed by a '?'; otherwise '?' is literal. A run
    is repaired when none of its bytes is impossible in UTF-8 and it holds a
    complete multi-byte sequence, or damaged ones on a line that has complete
    ones elsewhere. In a document that is mostly mojibake, a run with a damaged
    sequence that kept a continuation byte is repaired on any line
    ("å„ç§modules" is 各种 with both middle bytes lost, and nothing else on its
    line), and a bare lead byte on a line with complete sequences. Which bytes
    were lost is inferred once for the whole document (``_infer_losses``); a
    document with enough damage is read twice, the second time with its own
    prior (``_document_prior``).
    """
    stats = _RepairStats()
    if not _RUN_RE.search(text):
        return text, stats

    def runs(table: dict[int, str]) -> list[_RunParse]:
        parses = []
        line, pos = 0, 0
        for m in _RUN_RE.finditer(text):
            run = m.group()
            if run.count("?") == len(run):
                continue
            line += text.count("\n", pos, m.start())
            pos = m.start()
            parses.append(_parse_run(run, m.start(), line, table))
        return parses

    parses = runs(_TO_BYTES)
    damaged = sum(p.broken + p.lone for p in parses)
    if damaged and 2 * sum(p.followed_by_qmark for p in parses) > damaged:
        stats.qmark_mode = True
        parses = runs(_TO_BYTES_Q)
    parses = [p for p in parses if not p.invalid and p.valid + p.broken + p.lone]

    valid_per_line: Counter[int] = Counter()
    for p in parses:
        valid_per_line[p.line] += p.valid
    doc_valid = sum(valid_per_line.values())
    mojibake_chars = sum(p.end - p.start for p in parses if p.valid)
    mostly_mojibake = doc_valid >= _MIN_DOC_VALID and 2 * mojibake_chars >= _count_non_ascii(text)

    def wanted(p: _RunParse) -> bool:
        if not (p.broken or p.lone):
            return p.valid > 0
        if valid_per_line[p.line]:
            # A bare lead byte alone ("、" with both continuation bytes lost) only in mojibake text.
            return bool(p.valid or p.broken or mostly_mojibake)
        # Damaged sequences alone are no proof of mojibake (café—, naïve) unless the document is
        # ("â”" is an em dash that lost its 0x80); bare lead bytes alone never are.
        return mostly_mojibake and p.broken > 0

    parses = [p for p in parses if wanted(p)]
    n_damaged = sum(p.broken + p.lone for p in parses)
    if not n_damaged:
        return _render_runs(text, parses, None, _Losses((), ()), None, _PassCache(), stats)
    model = _model()
    model.load_words()
    losses = _infer_losses(_byte_counts(parses), sum(q.slots for q in parses), model.byte_share())
    stats.lost = tuple(b for b, lp in zip(losses.values, losses.logp, strict=True) if lp > math.log(0.5))
    script = _script(model, [text, *(v for q in parses for k, v in q.pieces if k == "text")])
    cache = _PassCache()
    if n_damaged < _ADAPT_MIN_DAMAGED:
        return _render_runs(text, parses, model, losses, script, cache, stats)
    first = _RepairStats(qmark_mode=stats.qmark_mode, lost=stats.lost)
    cache.record = True
    result = _render_runs(text, parses, model, losses, script, cache, first)
    prior = _document_prior(model, cache.choices, losses)
    if not prior:
        return result
    # Second round: only windows with a sequence that has a prior change; the rest are memoised.
    first_round = cache.rendered
    cache = _PassCache(prior=prior)
    return _render_runs(text, parses, model, losses, script, cache, stats, first_round)


_ADAPT_MIN_DAMAGED = 30  # damaged sequences a document needs for its own character prior
# Weight of the document prior: with wordfreq's larger vocabulary, more choices count as made
# by context, and at full weight a frequent reading (来 in 来说, 以来) overrode words (连接).
_ADAPT_WEIGHT = 0.5
_ADAPT_SMOOTHING = 2.0


def _document_prior(
    model: _CharModel, choices: list[tuple[str, str, tuple[tuple[str, ...], int], _Cands]], losses: _Losses
) -> dict[str, dict[str, float]]:
    """Per damaged sequence, a bonus for the characters the document itself chose for it.

    One sense per discourse: in a long note, the damaged sequence that stands for 字 in
    字典 and 字符 is 字 in 字段 too, although the general dictionary prefers 南段. Only
    sequences read in two ways or more get a prior, and only choices made inside a
    dictionary word that no other candidate would also have spelled count (context made
    them, not frequency alone). The bonus is the log-ratio of a character's smoothed
    share to that of a character never chosen, so unchosen ones keep their chances.
    """
    chosen: dict[str, set[str]] = {}
    for tok, c, _, _ in choices:
        chosen.setdefault(tok, set()).add(c)
    simp = model.to_simplified
    words = model.word_logp
    counts: dict[str, Counter[str]] = {}
    for tok, c, (word, off), options in choices:
        if len(chosen[tok]) < 2 or not word:
            continue
        keys = [simp.get(x, x) for x in word]
        if any(  # another candidate spells a word here too: the choice was by frequency
            key != keys[off] and "".join([*keys[:off], key, *keys[off + 1 :]]) in words
            for _, key, _, _ in options
        ):
            continue
        counts.setdefault(tok, Counter())[c] += 1
    function = model.function_chars
    grammatical = {tok for tok, _, _, options in choices if sum(o[1] in function for o in options) >= 2}
    prior: dict[str, dict[str, float]] = {}
    for tok, cnt in counts.items():
        if tok in grammatical:
            # Several function words (不, 中 and 与 from one damaged sequence): each is common in
            # any text, so their counts here say nothing about which one a given place holds.
            continue
        alpha = _ADAPT_SMOOTHING / max(len(_token_options(tok, losses.values)), 1)
        prior[tok] = {c: _ADAPT_WEIGHT * math.log((n + alpha) / alpha) for c, n in cnt.items()}
    return prior


def _render_runs(
    text: str,
    parses: list[_RunParse],
    model: _CharModel | None,
    losses: _Losses,
    script: str | None,
    cache: _PassCache,
    stats: _RepairStats,
    previous: dict[int, tuple[str | None, int]] | None = None,
) -> tuple[str, _RepairStats]:
    """Render every run; ``previous`` holds the first round's results, reused for the
    runs that hold no damaged sequence with a document prior."""
    out: list[str] = []
    pos = 0
    for n, p in enumerate(parses):
        reconstructed = stats.reconstructed
        earlier = previous.get(n) if previous is not None else None
        if earlier is not None and not any(k == "broken" and v in cache.prior for k, v in p.pieces):
            fixed, guessed = earlier  # the second round changes nothing here
            stats.reconstructed += guessed
        else:
            before = ("".join(out[-4:]) + text[pos : p.start])[-200:]
            fixed = _render(p, model, losses, stats, before, script, cache)
            cache.rendered[n] = (fixed, stats.reconstructed - reconstructed)
        if fixed is None:
            stats.reconstructed = reconstructed
            continue
        out.append(text[pos : p.start])
        out.append(fixed)
        pos = p.end
        stats.restored += _count_non_ascii(fixed)
        stats.consumed += _count_non_ascii(text[p.start : p.end])
    if not out:
        return text, stats
    out.append(text[pos:])
    return "".join(out), stats


def _repair(text: str) -> tuple[str, _RepairStats]:
    total = _RepairStats()
    for _ in range(_MAX_PASSES):
        text, stats = _repair_pass(text)
        if not stats.restored:
            break
        # A later pass consumes what an earlier one produced (text mangled twice): count the
        # characters that end up in the text, not every intermediate layer.
        total.restored += stats.restored - min(stats.consumed, total.restored)
        total.consumed += stats.consumed
        total.reconstructed += stats.reconstructed
        total.qmark_mode = total.qmark_mode or stats.qmark_mode
        total.lost = total.lost or stats.lost
    return text, total


def repair_mojibake(text: str) -> tuple[str, int]:
    """Undo UTF-8-read-as-cp1252 mojibake, lossless or lossy.

    Returns the repaired text and the number of characters restored; returns
    ``(text, 0)`` unchanged when the text is not mojibake. Legitimate Latin-1
    text ("café, naïve, Müller") is left alone: a run of characters is only
    repaired when its bytes form complete UTF-8 sequences, and runs with damaged
    sequences only on lines that hold complete ones too (or, in a document that is
    mostly mojibake, when a damaged sequence kept a continuation byte).
    """
    fixed, stats = _repair(text)
    return fixed, stats.restored


def _repair_note(stats: _RepairStats) -> str:
    if stats.reconstructed:
        how = "'?' for lost bytes" if stats.qmark_mode else "lost bytes"
        return (
            f"repaired mojibake (utf-8 read as cp1252, lossy: {how}): "
            f"{stats.restored:,} characters restored, "
            f"{stats.reconstructed:,} of them guessed from the words around them"
            + (f" (lost bytes {' '.join(f'{b:02X}' for b in stats.lost)})" if stats.lost else "")
        )
    return f"repaired mojibake (utf-8 read as cp1252): {stats.restored:,} characters restored"


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------

_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])
# More control characters than this (ESC, tab, newlines and form feed not counted): binary.
_MAX_CONTROL_SHARE = 0.05
_MAX_CONTROL_BYTE_SHARE = 0.30  # early exit before decoding (UTF-16 CJK text has about 5 % such bytes)
# Below this the best decoding is noise: text scores -2 to -6 per byte, random bytes -10 and less.
_MIN_LOGP_PER_BYTE = -9.0
_GB_TRADITIONAL_PENALTY = -3.0  # log(1/20): a traditional form in a GB18030 file
_UTF16_NO_NUL_MIN_BYTES = 16  # shorter CJK-only UTF-16 is too ambiguous to guess
_UTF16_MIN_NUL_SHARE = 0.05  # share of one parity's bytes that are NUL in ASCII-bearing UTF-16
_CJK_RE = re.compile("[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")
_SURROGATE_RE = re.compile("[\udc80-\udcff]+")
_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_FROM_BYTES = {ord(v): k for k, v in _CP1252_SPECIALS.items()}
_BINARY = "looks like a binary file, not text"
_MAGIC = (
    (b"\x89PNG", "PNG image"),
    (b"PK\x03\x04", "zip archive"),
    (b"%PDF", "PDF"),
    (b"GIF8", "GIF image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"\x1f\x8b", "gzip data"),
    (b"\x7fELF", "executable"),
)


def _binary_error(data: bytes, name: str) -> BinaryFileError:
    kind = next((k for magic, k in _MAGIC if data.startswith(magic)), None)
    msg = f"{_BINARY} ({kind})" if kind else _BINARY
    where = f"{name} " if name else "the file "
    return BinaryFileError(msg, hint=f"{where}is skipped; only text and PDF files are ingested")


def _control_share(data: bytes) -> float:
    return (len(data) - len(data.translate(None, _CONTROL_BYTES))) / len(data)


def _utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le' / 'utf-16-be' when NULs sit on one parity only, as ASCII in UTF-16 does."""
    if len(data) % 2:
        return None
    even, odd = data[0::2], data[1::2]
    nul_even, nul_odd = even.count(0), odd.count(0)
    half = len(data) // 2
    # The other parity holds a few NULs too: code points like U+4E00 have a zero low byte.
    if nul_odd >= _UTF16_MIN_NUL_SHARE * half and nul_even <= 0.2 * nul_odd:
        return "utf-16-le"
    if nul_even >= _UTF16_MIN_NUL_SHARE * half and nul_odd <= 0.2 * nul_even:
        return "utf-16-be"
    return None


def _cp1252(data: bytes) -> str:
    """cp1252 with the five undefined bytes kept as their C1 control characters (as Windows does)."""
    return data.decode("latin-1").translate(_FROM_BYTES)


def _lenient_utf8(data: bytes) -> tuple[str, int]:
    """UTF-8 where invalid bytes are read as cp1252 (files that mix both); returns (text, bad bytes)."""
    text = data.decode("utf-8", errors="surrogateescape")
    bad = 0

    def fix(m: re.Match[str]) -> str:
        nonlocal bad
        raw = m.group().encode("utf-8", errors="surrogateescape")
        bad += len(raw)
        return _cp1252(raw)

    return _SURROGATE_RE.sub(fix, text), bad


def _candidates_for(data: bytes) -> Iterator[tuple[str, str, int, str | None]]:
    """(encoding, text, number of bad bytes, note) for each encoding that decodes ``data``."""
    text, bad = _lenient_utf8(data)
    yield "utf-8", text, bad, f"{bad:,} byte(s) that are not valid UTF-8 read as cp1252"
    for enc in ("gb18030", "big5", "cp950"):
        try:
            yield enc, data.decode(enc), 0, None
        except UnicodeDecodeError:
            continue
        if enc == "big5":
            break  # cp950 only when plain big5 fails
    if len(data) % 2 == 0 and len(data) >= _UTF16_NO_NUL_MIN_BYTES:
        # UTF-16 without BOM and without ASCII (so without NUL bytes): CJK text only.
        for enc in ("utf-16-le", "utf-16-be"):
            try:
                text = data.decode(enc)
            except UnicodeDecodeError:
                continue
            if 2 * len(_CJK_RE.findall(text)) >= len(text):
                yield enc, text, 0, None
    yield "cp1252", _cp1252(data), 0, None


def _codec_prior(model: _CharModel, enc: str, text: str) -> float:
    """GB18030 files hold simplified text: traditional forms count less there (not in Big5)."""
    if enc != "gb18030" or not model.trad_forms:
        return 0.0
    return _GB_TRADITIONAL_PENALTY * sum(n for c, n in Counter(text).items() if c in model.trad_forms)


def _guess_legacy(data: bytes, name: str) -> tuple[str, str, list[str]]:
    """Pick the most plausible decoding of bytes that are not valid UTF-8."""
    model = _model()
    scored = sorted(
        (
            (
                model.text_score(text) + bad * _LOGP_INVALID + _codec_prior(model, enc, text),
                order,
                enc,
                text,
                note,
            )
            for order, (enc, text, bad, note) in enumerate(_candidates_for(data))
        ),
        key=lambda s: (-s[0], s[1]),
    )
    score, _, enc, text, note = scored[0]
    if score / len(data) < _MIN_LOGP_PER_BYTE:
        raise EncodingError(
            "no text encoding fits the bytes (tried utf-8, gb18030, big5, utf-16, cp1252)",
            hint=f"convert {name or 'the file'} to UTF-8",
        )
    if enc == "utf-8":
        return enc, text, [note] if note else []
    runner_score, _, runner_enc, _, _ = scored[1]
    return (
        enc,
        text,
        [
            f"decoded as {enc}: more plausible than {runner_enc} "
            f"({score / len(data):.1f} vs {runner_score / len(data):.1f} log-probability per byte)"
        ],
    )


def decode_bytes(data: bytes, *, name: str = "") -> Decoded:
    """Decode a note file's bytes into text with '\\n' newlines and no BOM.

    Raises ``BinaryFileError`` for binary data (NUL bytes outside UTF-16, or
    many control characters) and ``EncodingError`` when no encoding fits.
    ``name`` is only used in error hints.
    """
    if not data:
        return Decoded("", "utf-8", ())
    notes: list[str] = []
    encoding: str
    bom = next((enc for prefix, enc in _BOMS if data.startswith(prefix)), None)
    if bom is not None:
        encoding = bom
        if encoding == "utf-8-sig":
            text, bad = _lenient_utf8(data[3:])
            if bad:
                notes.append(f"{bad:,} byte(s) that are not valid UTF-8 read as cp1252")
        else:
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError as exc:
                reason = f"invalid {encoding.upper()} despite its byte order mark: {exc.reason}"
                raise EncodingError(reason, hint=f"convert {name or 'the file'} to UTF-8") from exc
    elif b"\x00" in data:
        utf16 = _utf16_without_bom(data)
        if utf16 is None:
            raise _binary_error(data, name)
        try:
            text = data.decode(utf16)
        except UnicodeDecodeError as exc:
            raise _binary_error(data, name) from exc
        if _model().text_score(text) / len(data) < _MIN_LOGP_PER_BYTE:
            raise _binary_error(data, name)  # NULs on one parity, but the characters are noise
        encoding = utf16
        notes.append(f"decoded as {utf16} (no byte order mark)")
    else:
        if _control_share(data) > _MAX_CONTROL_BYTE_SHARE:
            raise _binary_error(data, name)
        try:
            text = data.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            encoding, text, legacy_notes = _guess_legacy(data, name)
            notes.extend(legacy_notes)
    text = text.removeprefix("\ufeff")
    fixed, stats = _repair(text)
    if _control_share_text(fixed) > _MAX_CONTROL_SHARE:
        raise _binary_error(data, name)
    if stats.restored:
        notes.append(_repair_note(stats))
    if "\r" in fixed:
        fixed = fixed.replace("\r\n", "\n").replace("\r", "\n")
    return Decoded(fixed, encoding, tuple(notes))


def _control_share_text(text: str) -> float:
    if not text:
        return 0.0
    controls = sum(
        n
        for c, n in Counter(text).items()
        if (ord(c) < 0x20 and c not in "\t\n\r\f\x1b") or 0x7F <= ord(c) <= 0x9F
    )
    return controls / len(text)
