"""One thing, one node: the normalisation that turns an entity's surface form into its key.

:func:`normalize_key` is a pure function, applied in this order:

1. Unicode NFKC (full-width ``ＤＯＣＫＥＲ`` and the ideographic space become
   ASCII; ligatures split), then ``str.casefold`` (``Docker`` = ``docker``).
2. Traditional Chinese to Simplified (``機器學習`` = ``机器学习``) with zhconv's
   ``zh-hans`` table, only for strings that hold a CJK character.
3. Quotes, brackets and trailing punctuation around the whole string are removed.
4. Separators *between* two letters or digits (spaces, ``-``, ``_``, ``·``) are
   removed, so ``sentence-transformers``, ``sentence_transformers``,
   ``Sentence Transformers`` and ``SentenceTransformers`` share the key
   ``sentencetransformers``. Leading dashes stay (``--gpus`` is a flag, not
   the word ``gpus``); dots, slashes and colons stay (``qwen2.5:7b``,
   ``BAAI/bge-m3``).

:class:`AliasTable` maps further variants that no rule can see (``HF`` is
``Hugging Face``) to one canonical key; it comes from a user-editable TOML file::

    [aliases]
    "Hugging Face" = ["HF", "huggingface", "抱抱脸"]
    "Docker" = "docker-ce"
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from rag.errors import ConfigError

__all__ = [
    "CJK_CHARS",
    "AliasTable",
    "has_cjk",
    "load_alias_table",
    "normalize",
    "normalize_key",
    "to_halfwidth",
    "to_simplified",
]

# Han (with extensions and compatibility ideographs), 々 〆 〇, kana, Hangul syllables.
CJK_CHARS = (
    "\u3005-\u3007\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
_CJK_RE = re.compile(f"[{CJK_CHARS}]")
# Separators between two letters/digits (CJK included): removed from keys.
_INNER_SEP_RE = re.compile(r"(?<=[^\W_])[\s\-_·・‧]+(?=[^\W_])")
_SPACE_RE = re.compile(r"\s+")
_STRIP = " \t\r\n\"'`“”‘’«»()[]{}<>,.;!?，。；！？、：:（）【】《》「」『』"


def has_cjk(text: str) -> bool:
    return _CJK_RE.search(text) is not None


def to_halfwidth(text: str) -> str:
    """Full-width ASCII and compatibility forms to their plain forms (Unicode NFKC)."""
    return unicodedata.normalize("NFKC", text)


def zhconv_module() -> Any:
    """zhconv with its tables loaded (from a file it closes: its own loader leaves one open)."""
    from zhconv import zhconv

    if not zhconv.zhcdicts:
        zhconv.loaddict(os.path.join(os.path.dirname(zhconv.__file__), "zhcdict.json"))
    return zhconv


def to_simplified(text: str) -> str:
    """Traditional Chinese to Simplified (zhconv ``zh-hans``); text without CJK is returned as is."""
    if not has_cjk(text):
        return text
    return str(zhconv_module().convert(text, "zh-hans"))


def normalize(surface: str) -> str:
    """The key of an entity's surface form (see the module docstring); ``""`` for nothing left.
    :func:`normalize_key` is the same function with a cache, for the short strings entities are."""
    s = unicodedata.normalize("NFKC", surface).casefold()
    s = to_simplified(s)
    s = _SPACE_RE.sub(" ", s).strip(_STRIP)
    if s.startswith("-"):  # keep a flag's dashes, drop anything else before the first letter
        return "-" * (len(s) - len(s.lstrip("-"))) + _INNER_SEP_RE.sub("", s.lstrip("-"))
    return _INNER_SEP_RE.sub("", s)


normalize_key = lru_cache(maxsize=262144)(normalize)


@dataclass(frozen=True)
class AliasTable:
    """Variant keys to canonical keys, with the canonical display names.

    ``canonical[key]`` is the name the user wrote for that canonical entity;
    ``variants[key]`` lists the variants they wrote for it.
    """

    mapping: Mapping[str, str] = field(default_factory=dict)
    canonical: Mapping[str, str] = field(default_factory=dict)
    variants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, table: Mapping[str, str | Iterable[str]]) -> AliasTable:
        """Build from ``{canonical name: variant or [variants]}``; a variant claimed twice is an error."""
        mapping: dict[str, str] = {}
        canonical: dict[str, str] = {}
        variants: dict[str, tuple[str, ...]] = {}
        for name, raw in table.items():
            if not isinstance(name, str) or not normalize_key(name):
                raise ConfigError(f"alias table: empty canonical name {name!r}")
            if isinstance(raw, str):
                items = [raw]
            elif isinstance(raw, list | tuple):
                items = list(raw)
            else:
                raise ConfigError(
                    f"alias table: the variants of {name!r} must be a string or a list of strings"
                )
            ckey = normalize_key(name)
            if ckey in canonical and canonical[ckey] != name:
                raise ConfigError(f"alias table: {name!r} and {canonical[ckey]!r} are the same name")
            canonical[ckey] = name
            own: list[str] = []
            for v in items:
                if not isinstance(v, str) or not normalize_key(v):
                    raise ConfigError(f"alias table: empty or non-string variant of {name!r}")
                vkey = normalize_key(v)
                if vkey == ckey:
                    continue
                if mapping.get(vkey, ckey) != ckey:
                    raise ConfigError(
                        f"alias table: {v!r} is listed under both {canonical[mapping[vkey]]!r} and {name!r}"
                    )
                mapping[vkey] = ckey
                own.append(v)
            variants[ckey] = (*variants.get(ckey, ()), *own)
        for vkey, ckey in mapping.items():
            if vkey in canonical:
                raise ConfigError(
                    f"alias table: {canonical[vkey]!r} is a canonical name and a variant of {canonical[ckey]!r}",
                    hint="list every variant under one canonical name",
                )
        return cls(mapping, canonical, variants)

    @classmethod
    def load(cls, path: Path) -> AliasTable:
        """Read a TOML file with an ``[aliases]`` table."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read alias table {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"alias table {path} is not valid TOML: {exc}") from None
        table = data.get("aliases")
        if not isinstance(table, dict):
            raise ConfigError(
                f"alias table {path} has no [aliases] table",
                hint='write e.g. [aliases] then "Hugging Face" = ["HF", "huggingface"]',
            )
        return cls.from_mapping(table)

    def resolve(self, key: str) -> str:
        return self.mapping.get(key, key)

    def surfaces(self) -> list[str]:
        """Every name and variant the table spells out (for literal matching in text)."""
        out = list(self.canonical.values())
        for vs in self.variants.values():
            out.extend(vs)
        return out

    def fingerprint(self) -> str:
        payload = json.dumps(
            {"mapping": sorted(self.mapping.items()), "canonical": sorted(self.canonical.items())},
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.canonical)


def load_alias_table(configured: Path | None, data_dir: Path) -> AliasTable:
    """The table named in the settings (it must exist), else ``<data_dir>/aliases.toml`` if present."""
    if configured is not None:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise ConfigError(f"alias table not found: {path}", hint="check RAG_GRAPH__ALIASES")
        return AliasTable.load(path)
    default = Path(data_dir) / "aliases.toml"
    return AliasTable.load(default) if default.is_file() else AliasTable()
