"""Entity extraction by rules, without a language model, at ingest speed.

:meth:`RuleExtractor.extract` turns one chunk's text into :class:`Mention`\\ s
(one per entity key, with its count in the chunk). What counts as an entity,
by kind:

``command``  a CLI tool with its sub-command: first words of shell lines in
             fenced ``bash``/``sh``/``console`` blocks and of inline code
             spans (`` `ollama ps` ``), and known tools followed by a
             sub-command in prose (``用 docker commit 保存``)
``package``  package, model and image names: hyphenated or dotted names with
             digits or mixed case (``Qwen2-7B-Instruct``, ``bge-m3``,
             ``qwen2.5:7b-instruct``), ``org/name`` (``BAAI/bge-m3``, which
             also gives ``bge-m3``), names in code (``sentence-transformers``)
``code``     identifiers: ``snake_case``, ``ENV_VARS``, ``camelCase``,
             dotted names (``options.num_ctx``), flags (``--gpus``), file names
``host``     URL hosts and ``host:port`` hosts (``localhost``, ``get.docker.com``)
``port``     numbers in a port context only (``端口 11434``, ``:11434``,
             ``-p 8000:8000``, ``port 6333``)
``name``     acronyms (``GPU``, ``ACE2``), capitalised words and runs of them
             (``Hugging Face``, ``NVIDIA Container Toolkit``); a capitalised
             word that opens an English sentence is skipped (``Patients ...``)
``phrase``   English noun phrases: 2-4 lowercase words between stopwords and
             punctuation (``incubation period``), the candidate phrases of
             RAKE (Rose et al., "Automatic keyword extraction from individual
             documents", 2010); lowercase hyphenated words
``term``     Chinese words from jieba (accurate mode, no HMM) that are entity
             words in :mod:`rag.graph.lexicon` (nouns with an IDF floor,
             names, rare words), and two adjacent ones joined (向量 + 数据库)
``alias``    any name or variant of the alias table found literally

Junk that never becomes an entity: stopwords, pure numbers outside a port
context, numbers with units (``7B``, ``568M``), versions (``v1.5``),
abbreviations (``e.g``), single CJK characters, hashes, anything over 64
characters. Every surface form is mapped to its key by
:func:`rag.graph.normalize.normalize_key` and then through the alias table.

Each mention has a *salience*: ``(1 + ln tf) * kind weight`` (Chinese terms:
``1.5 * idf / median idf``, jieba's IDF). It depends on the chunk alone, so the
graph built incrementally equals the graph built from scratch; the
``max_salient`` most salient entities of a chunk are the ones whose
co-occurrence becomes graph edges.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rag.graph.normalize import CJK_CHARS, AliasTable, normalize_key, to_simplified, zhconv_module

__all__ = [
    "EXTRACTOR_VERSION",
    "KINDS",
    "Mention",
    "RuleExtractor",
    "is_junk",
]

# Bump when the rules change, so that stored graphs rebuild.
EXTRACTOR_VERSION = "1"

# Kinds by precedence: a key seen as several kinds in one chunk keeps the first of these.
KINDS = ("alias", "command", "package", "host", "port", "code", "name", "phrase", "term", "llm")
_KIND_RANK = {k: i for i, k in enumerate(KINDS)}
_KIND_WEIGHT = {
    "alias": 3.0,
    "command": 3.0,
    "package": 3.0,
    "host": 2.5,
    "port": 2.0,
    "code": 2.0,
    "name": 2.0,
    "phrase": 1.5,
    "term": 1.5,
    "llm": 2.0,
}


@dataclass(frozen=True, slots=True)
class Mention:
    """Entity ``key`` appears ``tf`` times in a chunk; ``surface`` is its most frequent spelling there."""

    key: str
    surface: str
    kind: str
    tf: int
    salience: float


# -- word lists ------------------------------------------------------------------------------------

# English function words (pronouns, auxiliaries, determiners, prepositions, conjunctions) and
# frequent verbs, adverbs, adjectives and vague nouns: they split noun phrases and are never
# entities on their own.
_FUNCTION_WORDS_TEXT = """
    a about above across after again against all almost along already also although always am among
    an and another any anyone anything are around as at be became because become been before being
    below between both but by can cannot could did do does doing done down during each either else
    enough even ever every few for from further had has have having he her here hers herself him
    himself his how however i if in into is it its itself just least less many may maybe me might
    more most much must my myself neither never no nor not now of off often on once one only onto or
    other others otherwise our ours ourselves out over own per perhaps quite rather same several
    shall she should since so some still such than that the their theirs them themselves then there
    therefore these they this those though through thus to together too toward towards under unless
    until up upon us very via was we well were what whatever when whenever where whether which while
    who whom whose why will with within without would yet you your yours yourself yourselves s t d
    ll m re ve y don doesn didn isn aren wasn weren won wouldn shouldn couldn let lets etc eg ie vs
    via
"""
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
_COMMON_WORDS_TEXT = """
    able add added adding allow allows also based begin best better big call called calls case cases
    change changed check come comes common could current data different do does done each easy else
    end example examples find first following found get gets getting give given go goes going good
    got great help here high however important include included includes including instead keep know
    known large last later less like likely little long look looks low made main make makes making
    many mean means need needed needs new next note number numbers old open part possible problem
    put really result results right run runs running said say says second see seen set sets show
    shown shows side simple small start started still sure take taken takes thing things think three
    time times try two type types use used useful uses using usually value values want way ways work
    works working yes yet whole wrong
"""
_COMMON_WORDS = frozenset(_COMMON_WORDS_TEXT.split())
_ENGLISH_COMMON = _FUNCTION_WORDS | _COMMON_WORDS
# Frequent words that are also sub-commands (docker run, ollama show, kubectl get): kept after a tool.
_SUBCOMMAND_WORDS_TEXT = """
    add build call check find get help install list open run set show start
"""
_SUBCOMMAND_WORDS = frozenset(_SUBCOMMAND_WORDS_TEXT.split())
_ZH_JUNK_TEXT = """
    的 了 是 在 和 与 及 或 也 都 而 就 这 那 有 个 着 之 于 为 把 被 让 给 从 对 等 吗 呢 吧 啊 呀 么 其中 以及 或者 而且 并且 因为 所以 如果 但是 虽然
    这个 那个 这些 那些 一个 什么 怎么 怎样 如何 哪些 哪个 哪里 为什么 是否 我们 你们 他们 时候 东西 方面 部分 情况 问题 方法 方式 结果 地方
"""
_ZH_JUNK = frozenset(_ZH_JUNK_TEXT.split())
_JUNK_ACRONYMS_TEXT = """
    ok ii iii iv vi vii viii ix xi xii am pm kb mb gb tb pb kib mib gib tib ms ns hz khz mhz ghz
"""
_JUNK_ACRONYMS = frozenset(_JUNK_ACRONYMS_TEXT.split())

# Tools whose name followed by a lowercase word in prose is a command (go, make, python: too ambiguous).
_PROSE_TOOLS_TEXT = """
    docker docker-compose podman kubectl helm git gh ollama pip pip3 pipx conda mamba uv poetry npm
    npx yarn pnpm cargo rustup apt apt-get dpkg brew systemctl journalctl nvidia-ctk huggingface-cli
    vllm
"""
_PROSE_TOOLS = frozenset(_PROSE_TOOLS_TEXT.split())
_SHELL_LANGS = frozenset({"bash", "sh", "shell", "console", "zsh", "fish", "shell-session", "terminal"})
_FILE_EXTS_TEXT = """
    py md txt toml yaml yml json cfg ini conf sh bash ps1 js ts tsx jsx go rs c cc cpp h hpp java kt
    rb php pdf csv tsv sqlite sqlite3 db gguf safetensors bin onnx pt pth ckpt whl tar gz tgz zip
    log env lock ipynb html css xml sql dockerfile
"""
_FILE_EXTS = frozenset(_FILE_EXTS_TEXT.split())
_TLDS_TEXT = """
    com org net io ai cn dev co app sh me edu gov info xyz uk de jp tw hk fr ru so cc tv
"""
_TLDS = frozenset(_TLDS_TEXT.split())

# -- patterns --------------------------------------------------------------------------------------

_W = rf"[^\W{CJK_CHARS}]"  # a word character that is not CJK
_CJK_RUN_RE = re.compile(f"[{CJK_CHARS}]+")
_FENCE_RE = re.compile(
    r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]{0,3}\1[ \t]*$", re.M | re.S
)
_INLINE_CODE_RE = re.compile(r"(?<!`)`([^`\n]{1,200})`(?!`)")
_URL_RE = re.compile(r"\b(?:https?|ftp|wss?)://([^\s/?#'\"<>()`，。）]+)[^\s'\"<>()`，。）]*", re.I)
# Latin/code tokens: optional flag dashes, word characters joined by connectors, optional ++.
_TECH_RE = re.compile(rf"(?<!{_W})(?<![./~\-])(?:--?(?={_W}))?{_W}+(?:[-./:+#@]{_W}+)*(?:\+\+)?")
# The same tokens less plain words (docker, Docker), which only the English pass looks at.
_TECH_NOT_PLAIN_RE = re.compile(
    rf"(?<!{_W})(?<![./~\-])(?!(?:[a-z]+|[A-Z][a-z]+)(?!{_W}|[-./:+#@]{_W}|\+\+))"
    rf"(?:--?(?={_W}))?{_W}+(?:[-./:+#@]{_W}+)*(?:\+\+)?"
)
_PORT_RES = (
    re.compile(r"(?:端口号?|\bports?)\s*(?:号|为|是|:|：|=)?\s*(\d{2,5})(?!\d|\.\d)", re.I),
    re.compile(r"(?<![\d.:])(\d{2,5})\s*(?:号?端口|\bports?\b)", re.I),
    re.compile(r"(?:^|\s)-p\s+(?:[\d.]+:)?(\d{2,5}):(\d{2,5})\b"),
    re.compile(r"\bEXPOSE\s+(\d{2,5})\b"),
    re.compile(r"\b(?:listen(?:s|ing)?\s+on|监听)\s*(?:端口)?\s*(\d{2,5})(?!\d|\.\d)", re.I),
)
_PORT_HINT_RE = re.compile(r"port|端口|监听|listen|EXPOSE|-p\s", re.I)
_HOST_PORT_RE = re.compile(r"^(?P<host>[A-Za-z0-9][\w.-]*):(?P<port>\d{2,5})$")
_IPV4_RE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_VERSION_RE = re.compile(r"^v?\d+(?:[._]\d+)*[a-z]?$", re.I)
_NUMBER_UNIT_RE = re.compile(r"^\d+(?:\.\d+)?[a-z]{0,3}$", re.I)
_HEX_RE = re.compile(r"^[0-9a-f]{8,}$", re.I)
_ACRONYM_RE = re.compile(r"^[A-Z][A-Z0-9&]*[A-Z0-9]$")
_INNER_CAPS_RE = re.compile(r"[a-z][A-Z]|[A-Z]{2}[a-z]")
_PLAIN_CAP_RE = re.compile(r"^[A-Z][a-z]+$")
_ENV_RE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
_IDENT_RE = re.compile(r"^[A-Za-z_]\w*$")
_SUBCOMMAND_RE = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
_TOOL_RE = re.compile(r"^[a-z][a-z0-9._-]{0,30}$")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’\- \t]*")
_SENTENCE_END = set(".!?。！？:：\n#*>-|")
_ENV_ASSIGN_RE = re.compile(r"^[A-Za-z_]\w*=\S*$")
_JOINED_RE = re.compile(r"[-_+#]")
_NAME_MARK_RE = re.compile(r"[-_.\d]")
_DOMAIN_PART_RE = re.compile(r"^[a-z0-9-]+$")
_HYPHEN_SPLIT_RE = re.compile(r"[-+]")


def is_junk(key: str, kind: str) -> bool:
    """Keys that never make an entity (see the module docstring)."""
    if len(key) < 2 or len(key) > 64:
        return True
    if key.isdigit():
        return kind != "port"
    if key in _ENGLISH_COMMON or key in _ZH_JUNK or key in _JUNK_ACRONYMS:
        return True
    if not any(ch.isalnum() for ch in key):
        return True
    if kind in ("alias", "llm"):
        return False  # the user or the model named it
    numeric = _VERSION_RE.match(key) or _NUMBER_UNIT_RE.match(key)
    return bool(numeric or (_HEX_RE.match(key) and any(c.isdigit() for c in key)))


class _Collector:
    """Counts surfaces per key for one chunk."""

    def __init__(self, aliases: AliasTable) -> None:
        self.aliases = aliases
        self.tf: dict[str, int] = {}
        self.kind: dict[str, str] = {}
        self.surfaces: dict[str, dict[str, int]] = {}
        self.idf: dict[str, float] = {}

    def add(self, surface: str, kind: str) -> None:
        surface = " ".join(surface.split()).strip(" \t\"'`“”‘’()[]{}<>,.;:!?，。；：！？、")
        if not surface:
            return
        key = normalize_key(surface)
        resolved = self.aliases.resolve(key)
        if resolved != key or key in self.aliases.canonical:
            kind, key = "alias", resolved
        if is_junk(key, kind):
            return
        self._count(key, surface, kind)

    def add_term(self, word: str, idf: float) -> None:
        """A Chinese dictionary word from a Simplified run: already its own key, unless an alias."""
        key = self.aliases.mapping.get(word, word)
        if key != word or key in self.aliases.canonical:
            self._count(key, word, "alias")
            return
        self._count(key, word, "term")
        if idf > self.idf.get(key, 0.0):
            self.idf[key] = idf

    def _count(self, key: str, surface: str, kind: str) -> None:
        self.tf[key] = self.tf.get(key, 0) + 1
        old = self.kind.get(key)
        if old is None or _KIND_RANK[kind] < _KIND_RANK[old]:
            self.kind[key] = kind
        forms = self.surfaces.setdefault(key, {})
        forms[surface] = forms.get(surface, 0) + 1

    def mentions(self, median_idf: float) -> list[Mention]:
        out: list[Mention] = []
        for key, tf in self.tf.items():
            kind = self.kind[key]
            if kind == "alias":
                surface = self.aliases.canonical.get(key) or _best(self.surfaces[key])
            else:
                surface = _best(self.surfaces[key])
            weight = _KIND_WEIGHT[kind]
            if kind == "term":
                weight = 1.5 * min(self.idf.get(key, median_idf), 16.0) / median_idf
            out.append(Mention(key, surface, kind, tf, round((1.0 + math.log(tf)) * weight, 6)))
        out.sort(key=lambda m: (-m.salience, m.key))
        return out


def _best(forms: dict[str, int]) -> str:
    """The most frequent spelling; ties go to the first seen (dicts keep insertion order)."""
    if len(forms) == 1:
        return next(iter(forms))
    return max(forms.items(), key=lambda kv: kv[1])[0]


@lru_cache(maxsize=1)
def _trad_chars() -> frozenset[str]:
    """Characters that zhconv's zh-hans table changes: a run without any needs no conversion."""
    table = zhconv_module().getdict("zh-hans")
    return frozenset(k for k, v in table.items() if len(k) == 1 and v != k)


class RuleExtractor:
    """Rule-based entity extraction (module docstring). Picklable; jieba loads on first use."""

    name = "rules"

    def __init__(
        self, aliases: AliasTable | None = None, *, max_salient: int = 16, cache_dir: Path | None = None
    ) -> None:
        self.aliases = aliases or AliasTable()
        self.max_salient = max_salient
        self.cache_dir = cache_dir
        self._alias_re = self._compile_aliases(self.aliases)

    def __getstate__(self) -> dict[str, Any]:
        return {"aliases": self.aliases, "max_salient": self.max_salient, "cache_dir": self.cache_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["aliases"], max_salient=state["max_salient"], cache_dir=state["cache_dir"])  # type: ignore[misc]

    def fingerprint(self) -> dict[str, Any]:
        return {
            "extractor": "rules",
            "version": EXTRACTOR_VERSION,
            "aliases": self.aliases.fingerprint(),
            "max_salient": self.max_salient,
        }

    @staticmethod
    def _compile_aliases(aliases: AliasTable) -> re.Pattern[str] | None:
        surfaces = sorted({s for s in aliases.surfaces() if s.strip()}, key=lambda s: (-len(s), s))
        if not surfaces:
            return None
        parts = [rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])" for s in surfaces]
        return re.compile("|".join(parts), re.I)

    # -- the public API ----------------------------------------------------------------------------

    def extract(self, text: str) -> list[Mention]:
        """Entities of one chunk, most salient first."""
        from rag.graph.lexicon import median_idf

        col = _Collector(self.aliases)
        self._collect(text, col)
        return col.mentions(median_idf())

    def query_keys(self, text: str) -> list[str]:
        """Candidate entity keys of a question: what :meth:`extract` finds, plus every run of up to
        four adjacent words (Latin tokens and jieba words), normalised and resolved through the alias
        table. The caller keeps those that are nodes of the graph."""
        keys = dict.fromkeys(m.key for m in self.extract(text))
        for segment in re.split(r"[^\w\s./:+#@\-]+", text):
            words = list(self._words(segment))
            for i in range(len(words)):
                for n in range(1, min(4, len(words) - i) + 1):
                    key = self.aliases.resolve(normalize_key(" ".join(words[i : i + n])))
                    if key and not is_junk(key, "port" if key.isdigit() else "term"):
                        keys.setdefault(key)
        return list(keys)

    # -- passes ------------------------------------------------------------------------------------

    def _words(self, segment: str) -> Iterator[str]:
        """Latin/code tokens and jieba words of a segment, in order."""
        pos = 0
        for m in _CJK_RUN_RE.finditer(segment):
            yield from (t.group(0) for t in _TECH_RE.finditer(segment, pos, m.start()))
            yield from (w for w in self._cut(m.group(0)) if w.strip())
            pos = m.end()
        yield from (t.group(0) for t in _TECH_RE.finditer(segment, pos))

    def _cut(self, run: str) -> list[str]:
        if not _trad_chars().isdisjoint(run):
            run = to_simplified(run)
        return segment(run)

    def _collect(self, text: str, col: _Collector) -> None:
        tools: set[str] = set()
        prose_parts: list[str] = []
        pos = 0
        for block in _FENCE_RE.finditer(text):
            prose_parts.append(text[pos : block.start()])
            pos = block.end()
            self._code_block(block.group(2).lower(), block.group(3), col, tools)
        prose_parts.append(text[pos:])
        prose = "\n".join(prose_parts)

        def inline(m: re.Match[str]) -> str:
            self._inline_code(m.group(1), col, tools)
            return " " * len(m.group(0))

        prose = _INLINE_CODE_RE.sub(inline, prose)
        prose = self._urls(prose, col)
        self._ports(prose, col)
        for m in _TECH_NOT_PLAIN_RE.finditer(prose):
            self._tech_token(m.group(0), col, in_code=False)
        self._prose_commands(prose, col, tools)
        self._english(prose, col)
        self._chinese(text, col)
        if self._alias_re is not None:
            # each literal occurrence of a name in the table counts once, whichever pass also saw it
            literal = _Collector(self.aliases)
            for m in self._alias_re.finditer(text):
                literal.add(m.group(0), "alias")
            for key, n in literal.tf.items():
                for surface, count in literal.surfaces[key].items():
                    for _ in range(min(count, n - col.tf.get(key, 0))):
                        col.add(surface, "alias")

    def _code_block(self, lang: str, body: str, col: _Collector, tools: set[str]) -> None:
        body = self._urls(body, col)
        self._ports(body, col)
        lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
        shellish = lang in _SHELL_LANGS or (
            not lang
            and lines
            and sum(ln.startswith("$ ") or _first_word_known(ln) for ln in lines) * 2 >= len(lines)
        )
        if shellish:
            for line in lines:
                if line.startswith("#") and not line.startswith("#!"):
                    continue
                for part in re.split(r"\s*(?:\|\||&&|\||;)\s*", line):
                    self._command_line(part, col, tools)
        for m in _TECH_NOT_PLAIN_RE.finditer(body):
            self._tech_token(m.group(0), col, in_code=True)
        for m in re.finditer(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", body, re.M):
            module = m.group(1) or m.group(2)
            if module and len(module) > 2:
                col.add(module.split(".")[0], "package")

    def _inline_code(self, span: str, col: _Collector, tools: set[str]) -> None:
        span = self._urls(span, col)
        self._ports(span, col)
        words = span.split()
        if len(words) >= 2 and _TOOL_RE.match(words[0]) and words[0] not in _ENGLISH_COMMON:
            self._command_line(span, col, tools)
        elif len(words) == 1:
            w = words[0]
            if _IDENT_RE.match(w) and w.islower() and len(w) >= 3:
                col.add(w, "code")
        for m in _TECH_NOT_PLAIN_RE.finditer(span):
            self._tech_token(m.group(0), col, in_code=True)

    def _command_line(self, line: str, col: _Collector, tools: set[str]) -> None:
        words = line.strip().lstrip("$").split()
        while words and (
            words[0] in ("sudo", "time", "exec", "nohup", "env") or _ENV_ASSIGN_RE.match(words[0])
        ):
            words = words[1:]
        if not words or not _TOOL_RE.match(words[0]) or words[0] in _ENGLISH_COMMON:
            return
        tool = words[0]
        tools.add(tool)
        col.add(tool, "command")
        if len(words) > 1 and _SUBCOMMAND_RE.match(words[1]) and words[1] not in _FUNCTION_WORDS:
            col.add(f"{tool} {words[1]}", "command")

    def _prose_commands(self, prose: str, col: _Collector, tools: set[str]) -> None:
        names = (_PROSE_TOOLS | tools) - {"go", "make", "python", "python3"}
        for m in re.finditer(r"(?<![A-Za-z0-9_./-])([a-z][a-z0-9._-]*)[ \t]+([a-z][a-z0-9-]{1,30})\b", prose):
            tool, sub = m.group(1), m.group(2)
            if tool in names and (sub not in _ENGLISH_COMMON or sub in _SUBCOMMAND_WORDS):
                col.add(f"{tool} {sub}", "command")

    def _urls(self, text: str, col: _Collector) -> str:
        def repl(m: re.Match[str]) -> str:
            netloc = m.group(1).rsplit("@", 1)[-1]
            host, _, port = netloc.partition(":")
            host = host.lower().removeprefix("www.")
            if host and host != "0.0.0.0":
                col.add(host, "host")
            if port.isdigit() and 0 < int(port) < 65536:
                col.add(port, "port")
            return " " * len(m.group(0))

        return _URL_RE.sub(repl, text)

    def _ports(self, text: str, col: _Collector) -> None:
        if not _PORT_HINT_RE.search(text):
            return
        for pattern in _PORT_RES:
            for m in pattern.finditer(text):
                for g in dict.fromkeys(m.groups()):  # -p 8000:8000 is one mention
                    if g and 0 < int(g) < 65536:
                        col.add(g, "port")

    def _tech_token(self, tok: str, col: _Collector, *, in_code: bool) -> None:
        if tok.isalpha() and (tok.islower() or _PLAIN_CAP_RE.match(tok)):
            return  # plain words: phrases and capitalised names are found by the English pass
        if "@" in tok:
            return  # e-mail addresses and user@host: personal, not topical
        if tok.startswith("-"):
            if tok.startswith("--") and len(tok) >= 4:
                col.add(tok, "code")  # long flags only: -it, -fsSL are too terse to mean anything
            return
        if ":" in tok:
            hp = _HOST_PORT_RE.match(tok)
            if hp:
                host, port = hp.group("host"), hp.group("port")
                if host.isdigit():
                    return  # 8000:8000 is a port mapping: the -p pattern counts it
                if host != "0.0.0.0":
                    col.add(host.lower(), "host")
                if 0 < int(port) < 65536:
                    col.add(port, "port")
                return
            name, _, tag = tok.partition(":")
            if any(c.isalpha() for c in name) and tag and any(c.isalnum() for c in tag):
                col.add(tok, "package")  # model or image with a tag: qwen2.5:7b-instruct
                self._tech_token(name, col, in_code=in_code)
            return
        if "/" in tok:
            parts = tok.split("/")
            if len(parts) == 2 and all(any(c.isalpha() for c in p) for p in parts):
                org, name = parts
                if _NAME_MARK_RE.search(name) or in_code:
                    col.add(tok, "package")
                    self._tech_token(name, col, in_code=True)
                    if _ACRONYM_RE.match(org) or _INNER_CAPS_RE.search(org):
                        col.add(org, "name")
            return
        if "." in tok:
            self._dotted(tok, col)
            return
        if _JOINED_RE.search(tok):
            self._joined(tok, col, in_code=in_code)
            return
        # a single word
        if tok.isdigit() or _NUMBER_UNIT_RE.match(tok) or _VERSION_RE.match(tok):
            return
        if _ACRONYM_RE.match(tok) and sum(c.isalpha() for c in tok) >= 2 and len(tok) <= 12:
            col.add(tok, "name")
        elif _INNER_CAPS_RE.search(tok):
            col.add(tok, "code" if tok[0].islower() else "name")
        elif (
            any(c.isdigit() for c in tok)
            and any(c.isalpha() for c in tok)
            and not (_HEX_RE.match(tok) and len(tok) >= 8)
        ):
            col.add(tok, "package")

    def _dotted(self, tok: str, col: _Collector) -> None:
        parts = tok.split(".")
        low = tok.lower()
        if _IPV4_RE.match(tok):
            if tok != "0.0.0.0":
                col.add(tok, "host")
            return
        if _VERSION_RE.match(tok) or all(len(p) <= 2 and p.isalpha() for p in parts):
            return  # 1.2.3, v0.5, e.g, i.e
        if (
            parts[-1].lower() in _TLDS
            and len(parts) >= 2
            and all(_DOMAIN_PART_RE.match(p) for p in low.split("."))
        ):
            col.add(low.removeprefix("www."), "host")
            return
        if parts[-1].lower() in _FILE_EXTS and parts[0]:
            col.add(tok, "code")
            return
        if any(p.isdigit() for p in parts[1:]) and any(c.isalpha() for c in parts[0]):
            col.add(tok, "package")  # qwen2.5, gpt-3.5
            return
        if all(_IDENT_RE.match(p) for p in parts) and len(parts[0]) >= 2:
            col.add(tok, "code")  # options.num_ctx, torch.cuda.is_available

    def _joined(self, tok: str, col: _Collector, *, in_code: bool) -> None:
        if tok.endswith(("++", "#")):
            col.add(tok, "name")
            return
        if _ENV_RE.match(tok) or "_" in tok:
            if any(c.isalpha() for c in tok):
                col.add(tok, "code")
            return
        parts = [p for p in _HYPHEN_SPLIT_RE.split(tok) if p]
        if sum(c.isalpha() for c in tok) < 2:
            return  # dates, ranges: 2023-01-05, 3-5
        if all(p.isalpha() and p.islower() for p in parts):
            if any(p in _ENGLISH_COMMON for p in parts) and not in_code:
                return  # state-of-the-art, well-known
            col.add(tok, "package" if in_code else "phrase")
            return
        col.add(tok, "package")  # Qwen2-7B-Instruct, SARS-CoV-2, bge-m3, all-MiniLM-L6-v2

    def _english(self, prose: str, col: _Collector) -> None:
        for m in _SEGMENT_RE.finditer(prose):
            words = [w.strip("'’-") for w in m.group(0).split()]
            words = [w for w in words if w]
            if not words:
                continue
            i = m.start() - 1
            while i >= 0 and prose[i] in " \t":
                i -= 1
            initial = i < 0 or prose[i] in _SENTENCE_END or prose[i].isdigit()
            self._caps(words, initial, col)
            self._phrases(words, col)

    def _caps(self, words: list[str], initial: bool, col: _Collector) -> None:
        run: list[tuple[int, str]] = []
        for i, w in enumerate([*words, ""]):
            if w and w[0].isupper() and w.replace("-", "").isalnum():
                run.append((i, w))
                continue
            while run and run[0][1].lower() in _ENGLISH_COMMON:
                run.pop(0)
            if len(run) >= 2:
                col.add(" ".join(x for _, x in run[:4]), "name")
            elif len(run) == 1:
                j, x = run[0]
                sentence_start = j == 0 and initial and len(words) > 1
                if _PLAIN_CAP_RE.match(x) and not sentence_start and len(x) >= 3:
                    col.add(x, "name")
            run = []

    def _phrases(self, words: list[str], col: _Collector) -> None:
        group: list[str] = []
        for w in [*words, ""]:
            if len(w) >= 3 and w.isalpha() and w.islower() and w.isascii() and w not in _ENGLISH_COMMON:
                group.append(w)
                continue
            if 2 <= len(group) <= 4:
                col.add(" ".join(group), "phrase")
            group = []

    def _chinese(self, text: str, col: _Collector) -> None:
        from rag.graph.lexicon import entity_words

        runs = _CJK_RUN_RE.findall(text)
        if not runs:
            return
        words = entity_words(self.cache_dir)
        trad = _trad_chars()
        runs = [to_simplified(r) if not trad.isdisjoint(r) else r for r in runs if len(r) > 1]
        prev: tuple[str, float] | None = None
        for w in segment("\n".join(runs)):  # one call; "\n" comes back between runs
            idf = words.get(w)
            if idf is None or w in _ZH_JUNK:
                prev = None
                continue
            col.add_term(w, idf)
            if prev is not None and len(prev[0]) + len(w) <= 8:
                col.add_term(prev[0] + w, max(prev[1], idf))
            prev = (w, idf)


_RJIEBA: Any = None


def segment(run: str) -> list[str]:
    """jieba's accurate-mode words of a CJK run, without HMM new-word guessing.

    Uses ``rjieba`` (the Rust port of jieba, same dictionary and algorithm) when it
    is installed: it gives the same words (``tests/test_graph_extract.py`` checks)
    about ten times faster; else the process-wide jieba tokenizer.
    """
    global _RJIEBA
    if _RJIEBA is None:
        try:
            import rjieba

            _RJIEBA = rjieba.Jieba()
        except ImportError:
            _RJIEBA = False
    if _RJIEBA is not False:
        return list(_RJIEBA.cut(run, False))
    from rag.sparse.tokenize import _jieba

    return list(_jieba().cut(run, HMM=False))


def _first_word_known(line: str) -> bool:
    first = line.split(maxsplit=1)[0] if line.split() else ""
    return first in _PROSE_TOOLS or first in ("sudo", "cd", "export", "python", "python3", "make", "go")
