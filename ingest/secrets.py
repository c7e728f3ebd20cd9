"""Redact secrets from note text before anything is indexed.

``redact(text)`` replaces each secret *value* with ``[REDACTED:<kind>]`` and leaves the rest of the text
as it was, so a note still reads (``OPENAI_API_KEY=[REDACTED:openai_key]``) and stays searchable by the
variable name. What counts as a secret:

* provider tokens with a recognisable shape: OpenAI ``sk-``/``sk-proj-``, Anthropic ``sk-ant-``, GitHub
  ``ghp_``/``gho_``/``ghs_``/``ghu_``/``ghr_``/``github_pat_``, GitLab ``glpat-``, Hugging Face ``hf_``,
  Slack ``xox?-`` and webhook paths, Google ``AIza``, AWS access key ids ``AKIA``/``ASIA``, Stripe ``sk_live_``/``rk_live_``
  (and ``_test_``), JWTs;
* values assigned to a secret-looking name (``*_KEY``, ``*token``, ``client_secret``, ``password``,
  ``PGPASSWORD``, ``pwd``, ``密码``/``口令``, ``密钥``, ``令牌``...) in ``.env``/shell/YAML/JSON/TOML/Python/
  XML/CLI-flag form or Chinese prose (``密码是 xxx``). Names ending in key/token/secret need a random-looking
  value (long, mixed characters, not words); password names take any literal that is not a placeholder,
  code or a sentence;
* ``Authorization:`` header values, ``Bearer``/``Basic`` credentials, the password part of
  ``scheme://user:pass@host``, ``curl -u user:pass``, ``mysql -pPASS``, ``sshpass -p PASS``,
  ``redis-cli -a PASS``;
* PEM/OpenSSH/PGP private key blocks, whole (also when the END line was not pasted);
* credentials that only their *context* marks, each also checked for the *shape* of a credential (length,
  character classes, not a word, a name, a version, an address or a path):

  - a label then spaces, a tab, a full-width space or a table's ``|``, no ``=``/``:``: ``Access Key  Q3AM…``,
    ``Secret Key  …``, ``password 123456``, ``登录密码 Abc#2023@pro``, ``Harbor 密码 …``, ``root密码…``;
  - a password alone on its line under a login command (ssh, sftp, telnet, ftp, mysql, psql, redis-cli,
    mongo, su, docker/podman login), under a user-name line (``用户名：admin``, ``账号 root``, ``login: ops``)
    or under a bare ``密码：`` label; several hosts in a row each get their own;
  - the ``user password`` rows of a section headed ``账号密码``/``登录信息``/``## Credentials``..., and the
    cells of a markdown table column headed ``密码``/``password``/``pwd``/``Secret Key``;
  - positional passwords of ``docker login -p``, ``mongo -p``, ``lftp -u user,PASS``, ``mc alias set``,
    ``htpasswd -b``, and ``.pgpass`` lines.

  Container ids (``docker start 7aa4…``), commit SHAs, checksums, model names (``qwen2.5:7b-instruct``,
  ``bge-m3``), URLs, ports and versions are never a credential's shape outside such a context, and
  ``ssh host`` followed by ``nvidia-smi`` or ``python3`` is a command, not a password.

``find_secrets(text)`` gives the spans and kinds without rewriting (an audit of stored text uses it);
``redact`` is built on it. ``REDACTOR_VERSION`` changes whenever what is found changes, so documents
redacted by an older version are processed again. Precision and recall on a labelled corpus (Chinese and
English, three splits), against detect-secrets, and throughput: ``bench/results/secrets.md``.

Not secrets: placeholders (``<...>``, ``${VAR}``, ``$VAR``, ``***``, ``xxx``, ``your_password``,
``changeme``), code (``os.environ["X"]``, ``args.key``, ``getpass()``), prose that merely mentions a
password, hashes, UUIDs and digests outside such assignments. detect-secrets was measured on the same
corpus and adds only false positives (checksums, code, base64 images), so it is not used.

Kinds: openai_key anthropic_key github_token gitlab_token huggingface_token slack_token slack_webhook
google_api_key aws_access_key_id aws_secret_key stripe_key jwt private_key bearer_token basic_auth password, and for
generic names api_key, token, secret.

Overlapping matches merge into one redaction (the kind of the widest match wins; on a tie the more
specific rule), counted once. Every pattern is linear in the input: bounded or possessive repetitions,
and look-arounds of fixed width.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator

PLACEHOLDER = "[REDACTED:{kind}]"

# Bump when detection changes, so that documents redacted by an older version are processed again.
REDACTOR_VERSION = 2

_Hit = tuple[int, int, str]  # (start, end, kind)

# -- value tests ---------------------------------------------------------------------------------------------


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_PLACEHOLDER_WORDS = _word_set(
    """
    password passwd pass pwd passphrase secret secrets token key apikey api_key api-key access_key
    secret_key private_key string str text bytes secretstr secretbytes any int value values required
    optional none null nil true false yes no on off undefined empty blank todo tbd fixme example
    sample dummy fake hidden masked redacted foo bar baz foobar mypassword my_password my-password
    mysecret my_secret mytoken my_token yourpassword changeme change_me change-me replaceme replace_me
    """
)
_PLACEHOLDER_HINT = re.compile(r"your|x{4}|\*{3}|placeholder|change[_-]?me|replace[_-]?me|redacted")
_PERCENT_VAR = re.compile(r"%\(?[A-Za-z_]\w*\)?[sd]?%?")
_YAML_TAG = re.compile(r"![A-Za-z_]+")
_MASK = re.compile(r"[*xX•·.#?_\-]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_CALLABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# camelCase / snake_case / digit runs, used both to split names and to measure how word-like a value is
_RUN = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_HEX = re.compile(r"[0-9a-f]+|[0-9A-F]+")
_PATHLIKE = re.compile(r"(?:~|\.{1,2})?(?:/[\w.@-]+){2,}/?")
# 144 frequent English letter pairs, roughly the head of the bigram ranking in norvig.com/mayzner.html.
_BIGRAMS = _word_set(
    """
    th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io le ve co me de
    hi ri ro ic ne ea ra ce li ch ll be ma si om ur ca el ta la ns di fo ho pe ec pr no ct us ac ot il tr
    ly nc et ut ss so rs un lo wa ge ie wh ee wi em ad ol rt po we na ul ni ts mo ow pa im mi ai sh ir su
    id os iv ia am fi ci vi pl ig tu ev ld ry mp fe bl ab gh ty op wo sa ay ex ke fr oo av ag if ap gr od
    bo sp rd do uc bu ei ov
    """
)


def _is_placeholder(value: str) -> bool:
    """Templates, masks, variable references and stock words that stand in for a secret."""
    v = value.strip()
    if not v:
        return True
    if v.startswith(("$", "<", "{", "[REDACTED:")) or "${" in v or "{{" in v or "$(" in v:
        return True
    if _PERCENT_VAR.fullmatch(v):  # %PASSWORD%, %(password)s
        return True
    if _YAML_TAG.fullmatch(v):  # !secret, !vault, !Ref
        return True
    if "..." in v or "…" in v or _MASK.fullmatch(v):
        return True
    low = v.lower()
    return (
        low in _PLACEHOLDER_WORDS
        or low.strip("_-\"'") in _PLACEHOLDER_WORDS
        or bool(_PLACEHOLDER_HINT.search(low))
    )


def _wordy(value: str) -> bool:
    """True when the letter pairs of ``value`` are too often common English bigrams to be random.

    One-sided binomial test: under the hypothesis "random letters", each adjacent letter pair is one of
    the 144 common English bigrams in ``_BIGRAMS`` with probability 144/676; more than 3.5 standard
    deviations above that expectation means words (``bert-base-uncased``, ``getOpenAiApiKey``). Tuned on
    generated tokens: about 0.3% of random base62/base64/base36/base32 strings are refused.
    """
    low = value.lower()
    total = common = 0
    for a, b in itertools.pairwise(low):
        if a.isalpha() and b.isalpha():
            total += 1
            common += a + b in _BIGRAMS
    if total < 4:
        return False
    p = len(_BIGRAMS) / 676
    return common - p * total > 3.5 * math.sqrt(total * p * (1 - p))


def _looks_random(value: str, min_len: int = 16, *, words: bool = True) -> bool:
    """A machine-made token rather than words, a path or an identifier.

    Needs ``min_len`` characters without whitespace, letters, and digits or both letter cases (then at
    least 20 characters); hex always passes the word test, other values must not be ``_wordy`` when
    ``words`` is set.
    """
    n = len(value)
    if n < min_len or any(c.isspace() for c in value) or "://" in value or _PATHLIKE.fullmatch(value):
        return False
    has_digit = any(c.isdigit() for c in value)
    has_lower = any(c.islower() for c in value)
    has_upper = any(c.isupper() for c in value)
    if not (has_lower or has_upper) or not (has_digit or (has_lower and has_upper and n >= 20)):
        return False
    if _HEX.fullmatch(value):
        return True
    return not (words and _wordy(value.removeprefix("django-insecure-")))


def _name_segments(name: str) -> list[str]:
    return [s.lower() for s in _RUN.findall(name)]


_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "token", "apikey")
_PREFIXED_KEYS = frozenset(
    p + "key" for p in ("api", "access", "secret", "private", "auth", "app", "client", "master", "signing")
)


@functools.lru_cache(maxsize=4096)
def _classify(name: str) -> str | None:
    """Kind of secret a variable/field/flag name holds, from its last meaningful segment, or None."""
    segs = _name_segments(name)
    while segs and (segs[-1].isdigit() or segs[-1] in {"v", "base", "data"}):
        segs.pop()
    if not segs or not {"public", "pub", "recv"}.isdisjoint(segs):  # public keys, gpg --recv-key ID
        return None
    last = segs[-1]
    if last.endswith(("password", "passwd")) or last in {"pass", "pwd", "passphrase", "passcode"}:
        return "password"
    if last == "key" or last in _PREFIXED_KEYS:
        return "api_key"
    if last.endswith("token"):
        return "token"
    if last.endswith("secret"):
        return "secret"
    return None


def _names_a_variable(value: str) -> bool:
    """``DB_PASSWORD``, ``hashedPassword``, ``api_key``: an identifier that is itself a secret's name."""
    if not _IDENT.fullmatch(value) or any(c.isdigit() for c in value):
        return False
    return any(w in s for s in _name_segments(value) for w in (*_SECRET_WORDS, "key", "pwd", "pass"))


def _is_code(value: str, next_char: str) -> bool:
    """An unquoted value that is an expression: attribute chain, call, subscript, or a variable argument."""
    if _DOTTED.fullmatch(value) or _names_a_variable(value):
        return True
    if next_char != "" and next_char in "([" and _CALLABLE.fullmatch(value):
        return True
    return next_char != "" and next_char in ",)}" and bool(_IDENT.fullmatch(value))


_PROSE_WORDS = _word_set("the a an is are be must should your please enter at least characters field not to")


def _is_prose(value: str) -> bool:
    """``"Password is required"``: a sentence (UI text, an error message) rather than a passphrase."""
    words = value.lower().split()
    return len(words) >= 3 and any(w.strip(".,!?:") in _PROSE_WORDS for w in words)


def _accept(kind: str, value: str) -> bool:
    if _is_placeholder(value):
        return False
    if kind == "password":
        return (
            len(value) >= 3 and value.isascii() and any(c.isalnum() for c in value) and not _is_prose(value)
        )
    return _looks_random(value)


_OPENERS = {")": "(", "]": "[", "}": "{", ">": "<"}


def _trim_closers(text: str, start: int, end: int, floor: int | None = None) -> int:
    """Move ``end`` back over closing brackets that have no opener in ``text[start:end]``."""
    floor = start if floor is None else floor
    while end > floor and text[end - 1] in _OPENERS:
        seg = text[start : end - 1]
        if seg.count(_OPENERS[text[end - 1]]) > seg.count(text[end - 1]):
            break
        end -= 1
    return end


def _extend_unquoted(text: str, start: int, end: int, *, in_query: bool) -> int:
    """Grow an unquoted value over brackets (``P@ss(w0rd)``) and, outside a URL query, ``&``."""
    stops = "\"'`,;&" if in_query else "\"'`,;"
    limit = min(len(text), end + 300)
    j = end
    while j < limit and text[j].isascii() and not text[j].isspace() and text[j] not in stops:
        j += 1
    while j > end and text[j - 1] == "&":
        j -= 1  # `cmd PASSWORD=x &`: a shell's background operator
    return _trim_closers(text, start, j, floor=end)


def _rest_of_line(text: str, end: int) -> str:
    stop = text.find("\n", end, end + 200)
    return text[end : stop if stop != -1 else min(len(text), end + 200)].strip()


def _ends_statement(text: str, end: int) -> bool:
    """After a ``name: value`` pair: end of line, a comment, a separator, or CJK text, not more prose."""
    rest = _rest_of_line(text, end)
    return not rest or rest[0] in "#,}])|(/" or ord(rest[0]) > 127


# -- rules ---------------------------------------------------------------------------------------------------

_PRIVATE_KEY_FULL = re.compile(
    r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r"[^-]*+(?:-(?!----)[^-]*+)*+"  # body: anything up to the next five dashes
    r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
)
_KEY_MATERIAL = re.compile(r"[A-Za-z0-9+/]{16}")
_PRIVATE_KEY_CUT = re.compile(  # pasted without its END line: the header and the armoured lines after it
    r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r"(?:(?:\r?\n[ \t>]*+)++(?:[A-Za-z0-9+/=]{8,}+|[A-Za-z-]{2,20}: [^\n]*+))++"
)


def _private_keys(text: str) -> Iterator[_Hit]:
    if "PRIVATE KEY" not in text:
        return
    for rx in (_PRIVATE_KEY_FULL, _PRIVATE_KEY_CUT):
        for m in rx.finditer(text):
            # key material, not a "BEGIN ... (omitted) ... END" sketch
            if _KEY_MATERIAL.search(text, m.start() + 30, m.end()):
                yield m.start(), m.end(), "private_key"


# (kind, pattern, literal that must occur in the text). Group ``b`` is the random body that is checked;
# the whole match is redacted unless a group ``s`` says which part.
_TOKEN_RULES: list[tuple[str, re.Pattern[str], str]] = [
    (kind, re.compile(rx), lit)
    for kind, rx, lit in [
        ("anthropic_key", r"sk-ant-(?<![A-Za-z0-9_-]sk-ant-)(?P<b>[A-Za-z0-9_-]{20,}+)", "sk-ant-"),
        (
            "openai_key",
            r"sk-(?<![A-Za-z0-9_-]sk-)(?:proj-|svcacct-|admin-)?(?P<b>[A-Za-z0-9_-]{20,}+)",
            "sk-",
        ),
        ("github_token", r"gh(?<![A-Za-z0-9_-]gh)[pousr]_(?P<b>[A-Za-z0-9]{30,}+)", "gh"),
        ("github_token", r"github_pat_(?<![A-Za-z0-9_-]github_pat_)(?P<b>[A-Za-z0-9_]{30,}+)", "github_pat_"),
        ("gitlab_token", r"gl(?<![A-Za-z0-9_-]gl)(?:pat|ptt|dt|rt|oas)-(?P<b>[A-Za-z0-9_-]{20,}+)", "gl"),
        ("huggingface_token", r"hf_(?<![A-Za-z0-9_-]hf_)(?P<b>[A-Za-z0-9]{30,}+)(?![A-Za-z0-9_-])", "hf_"),
        ("slack_token", r"xox(?<![A-Za-z0-9_-]xox)[abprs]-(?P<b>[A-Za-z0-9-]{10,}+)", "xox"),
        (
            "slack_webhook",
            r"hooks\.slack\.com/services/(?P<s>T[A-Z0-9]{6,}+/B[A-Z0-9]{6,}+/(?P<b>[A-Za-z0-9]{16,}+))",
            "hooks.slack.com",
        ),
        ("google_api_key", r"AIza(?<![A-Za-z0-9_-]AIza)(?P<b>[0-9A-Za-z_-]{35})(?![A-Za-z0-9_-])", "AIza"),
        ("aws_access_key_id", r"A(?<![A-Za-z0-9]A)(?:KIA|SIA)(?P<b>[A-Z0-9]{16})(?![A-Za-z0-9])", "A"),
        ("stripe_key", r"sk_(?<![A-Za-z0-9_-]sk_)(?:live|test)_(?P<b>[A-Za-z0-9]{16,}+)", "sk_"),
        ("stripe_key", r"rk_(?<![A-Za-z0-9_-]rk_)(?:live|test)_(?P<b>[A-Za-z0-9]{16,}+)", "rk_"),
        (
            "jwt",
            r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{8,}+\.eyJ[A-Za-z0-9_-]{8,}+\.(?P<b>[A-Za-z0-9_-]{8,}+)",
            "eyJ",
        ),
    ]
]


def _tokens(text: str) -> Iterator[_Hit]:
    for kind, rx, lit in _TOKEN_RULES:
        if lit not in text:
            continue
        for m in rx.finditer(text):
            body = m.group("b")
            if _is_placeholder(body):
                continue
            if kind in ("aws_access_key_id", "jwt") or _looks_random(body, 10, words=kind == "openai_key"):
                s = "s" if "s" in rx.groupindex else 0
                yield m.start(s), m.end(s), kind


_AUTH_HEADER = re.compile(
    r"[Aa](?:uthorization|UTHORIZATION)[\"']?[ \t]*[:=][ \t]*[\"']?"
    r"(?:(?P<scheme>(?i:bearer|token|basic|digest|bot|apikey|api-key|sso-key))[ \t]+)?"
    r"(?P<v>[A-Za-z0-9._~+/=:-]{8,400}+)"
)
_BEARER = re.compile(
    r"earer(?<=[Bb]earer)(?<![A-Za-z0-9_-][Bb]earer)[ \t]+(?P<v>[A-Za-z0-9._~+/=-]{16,400}+)"
)
_BASIC = re.compile(
    r"Basic(?<![A-Za-z0-9_-]Basic)[ \t]+(?P<v>[A-Za-z0-9+/]{8,400}+={0,2})(?![A-Za-z0-9_+/=-])"
)


def _is_basic_credentials(value: str) -> bool:
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return ":" in raw and raw.isprintable()


def _auth(text: str) -> Iterator[_Hit]:
    if "uthorization" in text or "UTHORIZATION" in text:
        for m in _AUTH_HEADER.finditer(text):
            v, scheme = m.group("v"), (m.group("scheme") or "").lower()
            if _is_placeholder(v):
                continue
            if scheme == "basic":
                yield m.start("v"), m.end("v"), "basic_auth"
            elif (scheme and not v.isalpha()) or _looks_random(v):
                yield m.start("v"), m.end("v"), "bearer_token"
    if "earer" in text:
        for m in _BEARER.finditer(text):
            if _looks_random(m.group("v")):
                yield m.start("v"), m.end("v"), "bearer_token"
    if "Basic" in text:
        for m in _BASIC.finditer(text):
            if _is_basic_credentials(m.group("v")):
                yield m.start("v"), m.end("v"), "basic_auth"


# the password may hold a raw ``#`` (pasted unencoded); an ``@`` after it still ends it
_URL_CREDS = re.compile(r"://(?P<user>[^\s:/@?#]{0,200}+):(?P<rest>[^\s/?]{1,300}+)")


def _url_credentials(text: str) -> Iterator[_Hit]:
    if "://" not in text:
        return
    for m in _URL_CREDS.finditer(text):
        rest = m.group("rest")
        at = rest.rfind("@")
        if at <= 0 or at == len(rest) - 1:
            continue  # host:port, no credentials
        pw = rest[:at]
        if _is_placeholder(pw):
            continue
        start = m.start("rest")
        yield start, start + at, "password"


_VALUE = (
    r"(?:[fbrFBR]?\"(?P<dq>[^\"\n]{0,500}+)\""
    r"|[fbrFBR]?'(?P<sq>[^'\n]{0,500}+)'"
    # unquoted: printable ASCII except quotes, brackets and , ; &
    r"|(?P<uq>[!#$%*+\-./0-9:=?@A-Z\\^_a-z|~]{1,500}+))"
)
_ANNOTATION = r"(?i:str|bytes|any|secretstr|secretbytes|optional\[str\]|str[ \t]*\|[ \t]*none)"
_ASSIGN_TAIL = (
    r"(?P<rest>[A-Za-z0-9_.-]{0,40}+)"
    r"(?:[\"'`]|\*\*?)?"  # closing quote of a JSON/dict key, or markdown bold
    r"[ \t]*(?P<sep>:[ \t]*" + _ANNOTATION + r"[ \t]*=(?!=)|:=|=>|=(?!=)|:(?![:/\\])|：)[ \t]*" + _VALUE
)
# The name's secret word in lower, Capitalised or UPPER case (``password``, ``apiKey``, ``PGPASSWORD``); the
# rest of the name is read around it. A literal alternation lets the regex engine skip to candidate
# characters, which a case-insensitive pattern does not.
_SECRET_WORD = "|".join(
    w for k in ("pass", "pwd", "key", "token", "secret") for w in (k, k.capitalize(), k.upper())
)
_ASSIGN = re.compile(r"(?:" + _SECRET_WORD + r")" + _ASSIGN_TAIL)
_FLAG = re.compile(r"--(?<!\S--)(?P<name>[A-Za-z][A-Za-z0-9_-]{0,40}+)(?:=|[ \t]+)" + _VALUE)
_XML = re.compile(r"<(?P<name>[A-Za-z][A-Za-z0-9_.-]{0,40}+)>(?P<uq>[^<>\s]{1,300}+)</(?P=name)>")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _value_hit(text: str, m: re.Match[str], kind: str, *, colon: bool, in_query: bool = False) -> _Hit | None:
    """Check the value of an assignment-like match; the span to redact, or None."""
    group = next(g for g in ("dq", "sq", "uq") if m.group(g) is not None)
    start, end = m.span(group)
    value = text[start:end]
    if _is_placeholder(value):
        return None
    if group == "uq":
        if _is_code(value, text[end : end + 1]):
            return None
        end = _extend_unquoted(text, start, end, in_query=in_query)
        value = text[start:end]
        if colon and kind == "password" and not _ends_statement(text, end):
            return None  # "password: see the wiki page", prose
        if kind == "password" and value[0] == "/" and value.lower() == value:
            return None  # PWD=/home/me, a path
    if not _accept(kind, value):
        return None
    return start, end, kind


_AWS_SECRET_NAME = re.compile(r"aws_?secret_?(?:access_?)?key", re.IGNORECASE)
_AWS_SECRET_VALUE = re.compile(r"[A-Za-z0-9/+]{40}")


def _assignments(text: str) -> Iterator[_Hit]:
    for m in _ASSIGN.finditer(text):
        head = m.start()
        floor = max(0, head - 40)
        while head > floor and text[head - 1] in _NAME_CHARS:
            head -= 1
        name = text[head : m.end("rest")]
        kind = _classify(name)
        if kind is None or text[max(0, head - 3) : head] == "://":
            continue  # not a secret's name, or the user part of a URL (``_url_credentials`` handles those)
        colon = m.group("sep") in (":", "：")
        hit = _value_hit(text, m, kind, colon=colon, in_query=head > 0 and text[head - 1] in "?&")
        if hit is None:
            continue
        if _AWS_SECRET_NAME.search(name) and _AWS_SECRET_VALUE.fullmatch(text[hit[0] : hit[1]]):
            hit = (hit[0], hit[1], "aws_secret_key")
        yield hit
    if "--" in text:
        for m in _FLAG.finditer(text):
            kind = _classify(m.group("name"))
            if kind is None or (m.group("uq") or "").startswith("-"):
                continue
            hit = _value_hit(text, m, kind, colon=False)
            if hit is not None:
                yield hit
    if "</" in text:
        for m in _XML.finditer(text):
            kind = _classify(m.group("name"))
            if kind is not None and _accept(kind, m.group("uq")):
                yield m.start("uq"), m.end("uq"), kind


_MYSQL_P = re.compile(r"-p(?<!\S-p)(?P<v>'[^'\n]{1,200}+'|\"[^\"\n]{1,200}+\"|[^\s'\"-][^\s]{0,200}+)")
_MYSQL_CMD = re.compile(
    r"(?<![A-Za-z0-9_-])(?:mysql|mysqldump|mysqladmin|mariadb|mariadb-dump)(?![A-Za-z0-9_-])"
)
_SSHPASS = re.compile(
    r"(?<![A-Za-z0-9_-])sshpass[ \t]+-p[ \t]*(?P<v>'[^'\n]{1,200}+'|\"[^\"\n]{1,200}+\"|[^\s'\"]{1,200}+)"
)
_CURL_USER = re.compile(
    r"-(?<!\S-)(?:u|-user)[ \t]+[\"']?(?P<user>[^\s:'\"]{1,100}+):(?P<v>[^\s'\"]{1,200}+)"
)
_CURL_CMD = re.compile(r"(?<![A-Za-z0-9_-])curl(?![A-Za-z0-9_-])")
_REDIS_A = re.compile(r"-a(?<!\S-a)[ \t]+(?P<v>'[^'\n]{1,200}+'|\"[^\"\n]{1,200}+\"|[^\s'\"-][^\s]{0,200}+)")
_REDIS_CMD = re.compile(r"(?<![A-Za-z0-9_-])redis-cli(?![A-Za-z0-9_-])")
_PORTS = re.compile(r"\d+(?::\d+)+")


def _line_before(text: str, pos: int) -> str:
    floor = max(0, pos - 300)
    nl = text.rfind("\n", floor, pos)
    return text[(nl + 1 if nl != -1 else floor) : pos]


def _unquote_span(m: re.Match[str]) -> tuple[int, int, str]:
    start, end = m.span("v")
    v = m.group("v")
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return start + 1, end - 1, v[1:-1]
    return start, end, v


def _commands(text: str) -> Iterator[_Hit]:
    if "-p" in text and ("mysql" in text or "mariadb" in text):
        for m in _MYSQL_P.finditer(text):
            start, end, v = _unquote_span(m)
            if (
                _PORTS.fullmatch(v)
                or _is_placeholder(v)
                or not _MYSQL_CMD.search(_line_before(text, m.start()))
            ):
                continue
            yield start, end, "password"
    if "redis-cli" in text:
        for m in _REDIS_A.finditer(text):
            start, end, v = _unquote_span(m)
            if not _is_placeholder(v) and _REDIS_CMD.search(_line_before(text, m.start())):
                yield start, end, "password"
    if "sshpass" in text:
        for m in _SSHPASS.finditer(text):
            start, end, v = _unquote_span(m)
            if not _is_placeholder(v):
                yield start, end, "password"
    if "curl" in text:
        for m in _CURL_USER.finditer(text):
            v = m.group("v").rstrip("\"'")
            if _is_placeholder(m.group("user")) or _is_placeholder(v):
                continue
            if _CURL_CMD.search(_line_before(text, m.start())):
                yield m.start("v"), m.start("v") + len(v), "password"


# After the label: an explicit separator (是, 为 with up to three characters before them: 均为, 默认是,
# 改为; a colon, =), or only spaces (a full-width one too), or
# nothing at all (``root密码Abc123``); group ``sep`` tells which, since a bare space needs a stricter value.
_CJK_TAIL = (
    r"(?:\*\*)?(?:[ \t\u3000]*(?P<sep>[\u4e00-\u9fff]{0,3}?[是为為]|:|：|=|＝|﹕)[ \t\u3000:：]*|[ \t\u3000]*)"
    r"[“「『‘\"'`]?(?P<v>[!-~]{1,200}+)"
)
# 密码/口令 (password), 密钥/秘钥 (secret key), 令牌 (token). Each pattern starts with a literal, which scans
# faster than one alternation; 密 covers both 密码 and 密钥.
_CJK_RULES = [
    (re.compile(r"密(?P<w>[码碼钥鑰])" + _CJK_TAIL), {"码": "password", "碼": "password"}, "api_key"),
    (re.compile(r"秘[钥鑰]()" + _CJK_TAIL), {}, "api_key"),
    (re.compile(r"口令()" + _CJK_TAIL), {}, "password"),
    (re.compile(r"令牌()" + _CJK_TAIL), {}, "token"),
]
_CJK_UNITS = frozenset("位个個字次天年月日秒分小")
_LENGTH_RULE = re.compile(r"\d+(?:-\d+)?")


def _cjk_secrets(text: str) -> Iterator[_Hit]:
    for rx, by_word, default in _CJK_RULES:
        if rx.pattern[0] not in text:
            continue
        for m in rx.finditer(text):
            yield from _cjk_value(text, m, by_word.get(m.group(1), default))


def _cjk_value(text: str, m: re.Match[str], kind: str) -> Iterator[_Hit]:
    start, end = m.span("v")
    while end > start and text[end - 1] in "\"'`,;":
        end -= 1
    end = _trim_closers(text, start, end)
    v = text[start:end]
    nxt = text[end : end + 3].lstrip()
    if _LENGTH_RULE.fullmatch(v) and nxt[:1] in _CJK_UNITS:
        return  # 密码为 8-16 位: a length rule, not a password
    # 登录密码 Abc#2023: no separator, so the value must look like a password and end the statement
    if m.group("sep") is None and not (_bare_value(kind, v) and _ends_label_value(text, end)):
        return
    if _accept(kind, v):
        yield start, end, kind


# -- credentials by context: a label, a login command or a section, then a value of the right shape ----------
#
# The rules above need an explicit ``name=value``. Notes also hold credentials that only their *context*
# marks: a label followed by spaces (``Access Key  Q3AM…``), a password alone on the line under an ``ssh``
# command or a user name, the rows of a section headed ``账号密码`` or of a table with a password column.
# The context alone is weak evidence (``ssh host`` is often followed by ``nvidia-smi``), so each value must
# also have the *shape* of a credential: ``_bare_value`` for a value after a label, ``_lone_value`` (stricter)
# for a token on a line of its own.

_LinePattern = tuple[re.Pattern[str], re.Pattern[str]]


def _line_pattern(body: str) -> _LinePattern:
    """``body`` anchored at a line start, as two patterns: one for the text's first line, one that starts
    with a literal newline (a scan for a literal is much faster than testing ``^`` at every position)."""
    return re.compile(body, re.MULTILINE), re.compile("\n" + body, re.MULTILINE)


def _line_matches(pattern: _LinePattern, text: str) -> Iterator[re.Match[str]]:
    first, rest = pattern
    m = first.match(text)
    if m is not None:
        yield m
    yield from rest.finditer(text)


def _literal_starts(text: str, literals: Iterable[str]) -> list[int]:
    """Sorted start offsets of every occurrence of each literal (``str.find`` runs at memory speed; a regex
    alternation of the same literals is tested at every position and is ten times slower)."""
    out: list[int] = []
    for lit in literals:
        i = text.find(lit)
        while i != -1:
            out.append(i)
            i = text.find(lit, i + 1)
    out.sort()
    return out


def _keyword_lines(words: Iterable[str], line: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """Lines of at most 300 characters that hold one of ``words`` and that ``line`` matches whole: a scan
    for the literals, then one match per candidate line."""
    last_end = -1
    for pos in _literal_starts(text, words):
        if pos <= last_end:
            continue  # a line already tried
        floor = max(0, pos - 300)
        nl = text.rfind("\n", floor, pos)
        if nl == -1 and floor > 0:
            continue  # a long line: not a heading or a label
        end = text.find("\n", pos, pos + 300)
        if end == -1:
            if pos + 300 < len(text):
                continue
            end = len(text)
        last_end = end
        m = line.fullmatch(text, nl + 1, end)
        if m is not None:
            yield m


_ALGORITHMS = _word_set(
    """
    md5 sha1 sha256 sha512 sha-1 sha-256 bcrypt scrypt argon2 argon2id pbkdf2 aes aes128 aes256 aes-256 rsa
    rsa2048 rsa4096 ed25519 hmac base64 utf8 utf-8 ssh ssh2 http https http2 tls1.2 tls1.3 sm3 sm4 2fa
    """
)
_VERSION = re.compile(r"[vV]?\d+(?:\.\d+)+(?:[-+._][0-9A-Za-z.]+)?")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?:/\d{1,2})?")
_USER_AT_HOST = re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?::\S*)?")
# segments of names, commands and model tags: words, numbers, word+small number (python3, qwen2), number+unit
# (7b, 8B, 128k), letter+number (v2, m3)
_NAME_SEGMENT = re.compile(
    r"(?:[A-Z]?[a-z]++)++|[A-Z]+|\d+|(?:[A-Z]?[a-z]+|[A-Z]+)\d{1,2}|\d+(?:[a-z]{1,2}|[A-Z]{1,2})|[A-Za-z]\d{1,3}"
)
_SEGMENT_SPLIT = re.compile(r"[-_.:/+]")
_SYMBOLS = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _name_like(value: str) -> bool:
    """``nvidia-smi``, ``python3``, ``bge-m3``, ``qwen2.5:7b-instruct``, ``test_01``: built of words (in
    lower, UPPER, Capitalised or camel case) and small numbers joined by ``-_.:/+``, the way commands,
    identifiers and model names are; a random mix of cases (``uzGfRES3``) is not a name."""
    parts = _SEGMENT_SPLIT.split(value)
    return all(p and _NAME_SEGMENT.fullmatch(p) for p in parts)


def _char_classes(value: str) -> int:
    return (
        any(c.islower() for c in value)
        + any(c.isupper() for c in value)
        + any(c.isdigit() for c in value)
        + any(c in _SYMBOLS for c in value)
    )


def _not_a_thing(value: str) -> bool:
    """Not a version, an address, a placeholder, a hash algorithm's name, a path, a URL or an option."""
    v = value
    return not (
        _is_placeholder(v)
        or v.lower() in _ALGORITHMS
        or _VERSION.fullmatch(v)
        or _IPV4.fullmatch(v)
        or _USER_AT_HOST.fullmatch(v)
        or "://" in v
        or v[0] in "/~-`|[(<{"
        or v.startswith(("./", "../"))
    )


def _bare_value(kind: str, value: str) -> bool:
    """A value after a label with no ``=``/``:``: a password (not a word, a name or a number under 6
    digits), or, for key/token/secret labels, a machine-made token (``_looks_random``)."""
    if not value.isascii() or not value.isprintable() or not _not_a_thing(value):
        return False
    if kind != "password":
        return _looks_random(value, 16)
    n = len(value)
    if value.isdigit():
        return 6 <= n <= 32
    if n < 4 or n > 128 or _char_classes(value) < 2:
        return False  # a word: "password reset", "密码 admin"
    if not any(c.isdigit() or c in _SYMBOLS for c in value):
        return n >= 12 and not _wordy(value)  # letters only, mixed case: "MinIO", "PostgreSQL"
    # bge-m3, v2-final, test_01: a name in parts; one word with a number (admin12) may well be a password
    return not (_name_like(value) and _SEGMENT_SPLIT.search(value) and _char_classes(value) < 3)


_LOWER_HEX = re.compile(r"[0-9a-f]+")


def _lone_value(value: str) -> bool:
    """A token alone on its line, under a login command or a user name: a password shape that is not a
    command (``nvidia-smi``, ``python3``, ``htop``), a name, a version or an address."""
    n = len(value)
    if n < 6 or n > 128 or not value.isascii() or not value.isprintable() or not _not_a_thing(value):
        return False
    if value[0] in "#>$" or value.endswith((";", ":")):  # markdown, prompts, SQL, labels
        return False
    if value.isdigit():
        return n <= 32
    if n in (12, 32, 40, 64) and _LOWER_HEX.fullmatch(value):
        return False  # the length of a container id, an MD5, a SHA-1 or a SHA-256 in lower-case hex
    classes = _char_classes(value)
    if classes < 2 or _name_like(value):
        return False
    return classes >= 3 or not _wordy(value)  # people's passwords are made of words: Admin888!pro


def _ends_label_value(text: str, end: int) -> bool:
    """After a space-separated value: end of line, punctuation, or the next label, not more prose."""
    rest = _rest_of_line(text, end)
    return not rest or rest[0] in "，。；、,;.|)）(（#/」』”’\"'`" or _NEXT_LABEL.match(rest) is not None


_NEXT_LABEL = re.compile(r"(?:用户|账号|帐号|账户|端口|地址|主机|邮箱|备注|user|port|host|(?i:ip))")

# English labels then spaces, a tab, a full-width space or a table's ``|``: ``Access Key  Q3AM…``,
# ``password 123456``, ``| Secret Key | …``. The label is matched in lower, Capitalised or UPPER case.
_EN_LABEL_WORDS = {
    "password": "password",
    "passwd": "password",
    "passphrase": "password",
    "pass": "password",
    "pwd": "password",
    "access key": "api_key",
    "accesskey": "api_key",
    "access_key": "api_key",
    "secret key": "api_key",
    "secretkey": "api_key",
    "secret_key": "api_key",
    "secret access key": "api_key",
    "api key": "api_key",
    "apikey": "api_key",
    "app key": "api_key",
    "appkey": "api_key",
    "app secret": "secret",
    "appsecret": "secret",
    "client secret": "secret",
    "secret": "secret",
    "token": "token",
    "access token": "token",
    "auth token": "token",
    "runner token": "token",
    "requirepass": "password",  # redis.conf
}


def _case_variants(phrase: str) -> list[str]:
    words = phrase.split(" ")
    title = " ".join(w.capitalize() for w in words)
    camel = words[0] + "".join(w.capitalize() for w in words[1:])
    return [
        re.escape(v)
        for v in {phrase, phrase.upper(), title, phrase.capitalize(), camel, title.replace(" ", "")}
    ]


_LABEL_TAIL = (
    r"(?:[ _-]?(?:ID|Id|id)(?![A-Za-z]))?(?:\*\*)?"  # Access Key ID
    r"(?:[ \t\u3000]+(?:is|was|IS)(?=[ \t]))?"  # password is X
    r"(?:[ \t\u3000]+|[ \t]*\|[ \t]*)(?P<v>[!-~]{3,200}+)"
)
# The label's last word in lower, Capitalised or UPPER case starts the match (a scan for a few literals is
# fast; a case-insensitive alternation of whole phrases is ten times slower); its qualifier in front
# (``Access``, ``secret_``, ``API ``) is read back from the text.
_EN_LABEL = re.compile(
    r"(?P<label>"
    + "|".join(
        v
        for w in ("password", "passwd", "passphrase", "pass", "pwd", "key", "secret", "token")
        for v in (w, w.capitalize(), w.upper())
    )
    + r")(?="  # the value in a look-ahead: "Secret Key  X" also matches at "Key"
    + _LABEL_TAIL
    + ")"
)
_LABEL_QUALIFIER = re.compile(
    r"(?i:(?P<q>secret[ _-]?access|access|secret|api|app|auth|client|runner|require)[ _-]?)\Z"
)
_LABEL_KINDS = {re.sub(r"[ _]", "", w): k for w, k in _EN_LABEL_WORDS.items()}


def _en_labels(text: str) -> Iterator[_Hit]:
    for m in _EN_LABEL.finditer(text):
        start = m.start()
        word = m.group("label").lower()
        q = _LABEL_QUALIFIER.search(text, max(0, start - 16), start)
        if q is not None:
            qualified = re.sub(r"[ _-]", "", q.group("q").lower()) + word
            if qualified in _LABEL_KINDS:
                word, start = qualified, q.start()
        kind = _LABEL_KINDS.get(word)
        if kind is None or (start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_-.$")):
            continue  # "key" alone; part of a longer name (PASSWORD_FILE, monkey, $password)
        start, end = m.span("v")
        while end > start and text[end - 1] in "\"'`,;.!?|":
            if kind == "password" and text[end - 1] in "!?." and end == m.end("v") and end - start > 4:
                break  # a password may end in ! or ?; a sentence's full stop is rarer in a pasted one
            end -= 1
        end = _trim_closers(text, start, end)
        value = text[start:end]
        if value and _bare_value(kind, value):
            yield start, end, kind


# A command line that asks for a password next: ssh, sftp, telnet, ftp, mysql, psql, redis-cli, mongo, su,
# docker/podman login. Optional prompt, list marker or quote in front.
_LOGIN_LINE = _line_pattern(
    r"[ \t>*`$#-]*+(?:sudo[ \t]+)?(?:ssh|sftp|scp|telnet|ftp|lftp|mysql|mariadb|psql|redis-cli|mongo|mongosh"
    r"|su|(?:docker|podman|nerdctl|helm[ \t]+registry)[ \t]+login)(?=[ \t]|$)[^\n]{0,300}+"
)
# A line that names a user (``用户名：admin``, ``账号 root``, ``login: ops``) or a password label with no
# value on its line (``密码：``): the value or password is expected on the next line.
_USER_LINE = _line_pattern(
    r"[ \t>*-]*+(?:\*\*)?(?:用户名|用户|账号|帐号|账户|登录名|(?i:user(?:name)?|login|account))(?:\*\*)?"
    r"[ \t\u3000]*+[:：=]?[ \t\u3000]*+[\w.@-]{1,64}+"
    r"(?:(?:[ \t\u3000]+|[ \t]*[/,][ \t]*)(?P<pw>[^\s]{3,128}+))?[ \t]*$"  # user and password on one line
)
_PASSWORD_LABEL_LINE = _line_pattern(
    r"[ \t>*-]*+(?:\*\*)?(?:密码|口令|(?i:password|passwd|pwd))(?:\*\*)?[ \t]*+[:：]?[ \t]*+$"
)
_LINE_TOKEN = re.compile(r"[ \t]*+(?:[-*+>][ \t]++)*+`?(?P<v>[^\s`]{1,200}+)`?[ \t]*")


def _next_line_token(text: str, end: int, max_blank: int = 2) -> tuple[int, int] | None:
    """Span of the single token that makes up the next non-blank line after ``end`` (within
    ``max_blank`` blank lines), or None."""
    pos = text.find("\n", end)
    for _ in range(max_blank + 1):
        if pos == -1:
            return None
        stop = text.find("\n", pos + 1)
        stop = len(text) if stop == -1 else stop
        line_start = pos + 1
        if text[line_start:stop].strip():
            m = _LINE_TOKEN.fullmatch(text, line_start, stop)
            return m.span("v") if m else None
        pos = stop if stop < len(text) else -1
    return None


def _next_line_passwords(text: str) -> Iterator[_Hit]:
    candidates = (
        (_line_matches(_LOGIN_LINE, text), True),
        (_line_matches(_USER_LINE, text), True),
        (_line_matches(_PASSWORD_LABEL_LINE, text), False),
    )
    for matches, strict in candidates:
        for m in matches:
            if m.groupdict().get("pw") is not None:
                if _bare_value("password", m.group("pw")):
                    yield m.start("pw"), m.end("pw"), "password"
                continue
            span = _next_line_token(text, m.end())
            if span is None:
                continue
            value = text[span[0] : span[1]]
            if (_lone_value(value) if strict else _bare_value("password", value)) or (
                not strict and _accept("password", value) and not _name_like(value)
            ):
                yield span[0], span[1], "password"


# A section about accounts: a heading (markdown ``#``, ``**bold**`` or a short line of its own) naming
# accounts or passwords, then lines of ``user password`` pairs (space, tab, ``/``, ``,`` or a colon between),
# each maybe after the name of a service (``阿里云：user / password``).
# Headings marked with ``#`` or ``**`` are found from the line start; unmarked ones (``账号密码`` on a line of
# its own) by a scan for these words.
_SECTION_WORDS = ("账号", "帐号", "账户", "用户名", "登录信息", "登陆信息")
_SECTION_HEAD = re.compile(
    r"(?:(?:#{1,6}[ \t]*|\*\*)?[^\n=:：/|`_]{0,12}?(?:账号密码|帐号密码|账户密码|用户名密码|用户名和密码|账号信息|"
    r"帐号信息|登录信息|登陆信息|登录账号|(?<![A-Za-z])(?i:credentials?|accounts?|logins?|passwords?)(?![A-Za-z]))"
    r"|(?:#{1,6}[ \t]*|\*\*)[^\n=:：/|`_]{0,12}?(?:账号|帐号|账户))"  # 各平台账号: a marked heading
    r"[^\n=:：/|`_]{0,12}?(?:\*\*)?[ \t]*[:：]?[ \t]*"
)
_SECTION_MARKED = _line_pattern(r"(?=#|\*\*)" + _SECTION_HEAD.pattern + "$")
_PAIR = re.compile(
    r"[ \t>*+-]*+(?:\d{1,2}[.)][ \t]*)?(?:[^\s:：|/]{1,20}[:：][ \t]*)?`?(?P<user>[\w.@-]{1,64}+)`?"
    r"(?:[ \t\u3000]*[/,:：|][ \t\u3000]*|[ \t\u3000]+)`?(?P<v>[^\s`]{3,128}+)`?[ \t]*"
)


def _sections(text: str) -> Iterator[_Hit]:
    marked = _line_matches(_SECTION_MARKED, text)
    unmarked = (
        m for m in _keyword_lines(_SECTION_WORDS, _SECTION_HEAD, text) if m.group()[:1] not in ("#", "*")
    )
    for m in itertools.chain(marked, unmarked):
        pos, seen = m.end(), 0
        for _ in range(20):  # at most 20 lines, up to a blank line after content or the next heading
            if pos >= len(text):
                break
            stop = text.find("\n", pos + 1)
            stop = len(text) if stop == -1 else stop
            line = text[pos + 1 : stop] if text[pos : pos + 1] == "\n" else text[pos:stop]
            start = stop - len(line)
            pos = stop
            if not line.strip():
                if seen:
                    break
                continue
            if line.lstrip().startswith("#"):
                break
            seen += 1
            pair = _PAIR.fullmatch(line)
            if pair is not None:
                value = pair.group("v")
                if _bare_value("password", value) and not _USER_AT_HOST.fullmatch(value):
                    yield start + pair.start("v"), start + pair.end("v"), "password"
                continue
            single = _LINE_TOKEN.fullmatch(line)
            if single is not None and _lone_value(single.group("v")):
                yield start + single.start("v"), start + single.end("v"), "password"


# Markdown tables: the cells under a header cell that names a secret (密码, password, pwd, Secret Key...).
_TABLE_HEAD = _line_pattern(
    r"[ \t]*\|[^\n]{0,200}?(?:密码|口令|密钥|(?i:pass|pwd|secret|token|key))[^\n|]{0,200}+\|[^\n]{0,200}+$"
)
_TABLE_RULE = re.compile(r"[ \t]*+\|?(?:[ \t]*+:?-++:?[ \t]*+\|)++[ \t]*+:?-*+:?[ \t]*+")
_TABLE_ROWS = 500  # rows read under one header: keeps a run of header-like lines linear


def _cell_kind(cell: str) -> str | None:
    c = cell.strip().strip("*`").strip()
    if any(w in c for w in ("密码", "口令")):
        return "password"
    if any(w in c for w in ("密钥", "秘钥")):
        return "api_key"
    return _classify(c.replace(" ", "_")) if c.isascii() else None


def _tables(text: str) -> Iterator[_Hit]:
    if "|" not in text:
        return
    done = 0  # end of the last table read: a header inside it is one of its rows
    for m in _line_matches(_TABLE_HEAD, text):
        if m.start() < done:
            continue
        cells = m.group().strip().strip("|").split("|")
        kinds = {i: k for i, c in enumerate(cells) if (k := _cell_kind(c)) is not None}
        if not kinds:
            continue
        pos = m.end() + 1
        rule_end = text.find("\n", pos)
        rule_end = len(text) if rule_end == -1 else rule_end
        if not _TABLE_RULE.fullmatch(text, pos, rule_end):
            continue
        pos = rule_end + 1
        for _ in range(_TABLE_ROWS):
            if pos >= len(text):
                break
            stop = text.find("\n", pos)
            stop = len(text) if stop == -1 else stop
            row = text[pos:stop]
            if not row.lstrip().startswith("|"):
                break
            offset = pos + row.index("|") + 1
            for i, cell in enumerate(row.strip().strip("|").split("|")):
                kind = kinds.get(i)
                value = cell.strip().strip("`")
                if kind is not None and value and " " not in value and _accept(kind, value):
                    s = offset + cell.index(value)
                    yield s, s + len(value), kind
                offset += len(cell) + 1
            pos = stop + 1
        done = pos


# ``docker login -p PASS``, ``mongo -p PASS`` (a space before the value, unlike mysql), ``lftp -u user,PASS``.
_LOGIN_P = re.compile(r"-p(?<!\S-p)[ \t]+(?P<v>'[^'\n]{1,200}+'|\"[^\"\n]{1,200}+\"|[^\s'\"-][^\s]{0,200}+)")
_LOGIN_CMD = re.compile(
    r"(?<![A-Za-z0-9_-])(?:(?:docker|podman|nerdctl)[ \t]+login|mongo|mongosh)(?![A-Za-z0-9_-])"
)
_LFTP_U = re.compile(r"-u(?<!\S-u)[ \t]+[^\s,]{1,64}+,(?P<v>[^\s'\"]{1,200}+)")


# ``mc alias set NAME URL ACCESS SECRET`` (MinIO client), ``htpasswd -b FILE USER PASSWORD``, and
# ``.pgpass`` lines ``host:port:database:user:password``.
_MC_ALIAS = re.compile(
    r"mc(?<![\w-]mc)[ \t]+(?:alias[ \t]+set|config[ \t]+host[ \t]+add)[ \t]+\S{1,100}+[ \t]+\S{1,300}+"
    r"[ \t]+(?P<a>[^\s'\"]{3,128}+)[ \t]+(?P<v>[^\s'\"]{3,128}+)"
)
_HTPASSWD = re.compile(
    r"htpasswd(?<![\w-]htpasswd)[ \t]+-[a-zA-Z]{0,5}b[a-zA-Z]{0,5}[ \t]+\S{1,300}+[ \t]+\S{1,100}+[ \t]+(?P<v>[^\s'\"]{1,128}+)"
)
_PGPASS = _line_pattern(
    r"(?:[\w-]+\.[\w.-]+|localhost|\*):(?:\d{1,5}|\*):[^:\s]{1,64}+:[^:\s]{1,64}+:(?P<v>[^:\s]{1,128}+)[ \t]*$"
)


def _login_flags(text: str) -> Iterator[_Hit]:
    if "mc " in text or "mc\t" in text:
        for m in _MC_ALIAS.finditer(text):
            for g in ("a", "v"):
                if not _is_placeholder(m.group(g)):
                    yield m.start(g), m.end(g), "api_key"
    if "htpasswd" in text:
        for m in _HTPASSWD.finditer(text):
            if not _is_placeholder(m.group("v")):
                yield m.start("v"), m.end("v"), "password"
    if ":*:" in text or ":5432:" in text or ":3306:" in text or text.count(":") >= 4:
        for m in _line_matches(_PGPASS, text):
            if _accept("password", m.group("v")):
                yield m.start("v"), m.end("v"), "password"
    if "-p" in text and ("login" in text or "mongo" in text):
        for m in _LOGIN_P.finditer(text):
            start, end, v = _unquote_span(m)
            if not _is_placeholder(v) and _LOGIN_CMD.search(_line_before(text, m.start())):
                yield start, end, "password"
    if "lftp" in text:
        for m in _LFTP_U.finditer(text):
            if not _is_placeholder(m.group("v")) and "lftp" in _line_before(text, m.start()):
                yield m.start("v"), m.end("v"), "password"


# Rule order breaks ties between equal spans: specific shapes first.
_RULES: list[Callable[[str], Iterator[_Hit]]] = [
    _private_keys,
    _tokens,
    _auth,
    _url_credentials,
    _assignments,
    _commands,
    _login_flags,
    _cjk_secrets,
    _tables,
    _en_labels,
    _sections,
    _next_line_passwords,
]


def _merge(hits: list[tuple[int, int, str, int]]) -> list[_Hit]:
    """Union overlapping spans; each merged span keeps the kind of its widest member (then rule order)."""
    hits.sort(key=lambda h: (h[0], -h[1]))
    merged: list[_Hit] = []
    cur_start, cur_end, best = hits[0][0], hits[0][1], hits[0]
    for h in hits[1:]:
        if h[0] < cur_end:
            cur_end = max(cur_end, h[1])
            if (h[1] - h[0], -h[3]) > (best[1] - best[0], -best[3]):
                best = h
            continue
        merged.append((cur_start, cur_end, best[2]))
        cur_start, cur_end, best = h[0], h[1], h
    merged.append((cur_start, cur_end, best[2]))
    return merged


def find_secrets(text: str) -> list[_Hit]:
    """Every secret value in ``text`` as ``(start, end, kind)``, sorted, not overlapping; ``text`` itself is
    not changed. What ``redact`` replaces, and what an audit of stored text reports."""
    hits = [(s, e, kind, prio) for prio, rule in enumerate(_RULES) for s, e, kind in rule(text) if e > s]
    return _merge(hits) if hits else []


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Replace every secret value in ``text`` with ``PLACEHOLDER``; also return how many of each kind.

    Text without secrets comes back unchanged with ``{}``. Redacting twice gives the same text and no new
    counts.
    """
    found = find_secrets(text)
    if not found:
        return text, {}
    pieces: list[str] = []
    counts: dict[str, int] = {}
    pos = 0
    for start, end, kind in found:
        pieces.append(text[pos:start])
        pieces.append(PLACEHOLDER.format(kind=kind))
        counts[kind] = counts.get(kind, 0) + 1
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces), counts
