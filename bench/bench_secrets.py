"""Measure secret detection: precision and recall on a labelled corpus, against detect-secrets, and speed.

    python bench/bench_secrets.py                      # everything; writes bench/results/secrets.{md,json}
    python bench/bench_secrets.py --no-detect-secrets  # ours only
    python bench/bench_secrets.py --baseline 5589c91   # also score the redactor as it was at that commit

The corpus is ``tests/secrets_corpus.py``: about a thousand snippets of notes (Chinese and English), each
secret value's span labelled, in two splits: ``tune`` (developed against) and ``heldout`` (other wordings
and shapes, not looked at while tuning).

How a detector is scored, at two granularities:

* **span**: a secret counts as caught when the detector's spans cover all of it (a partial redaction
  leaks the rest); a predicted span is a true positive when it overlaps a labelled secret, a false
  positive otherwise. This is what redaction needs.
* **line**: every line a predicted span touches is flagged as a whole; a secret is caught when all its
  lines are flagged; a flagged line is a true positive when it holds (part of) a secret. detect-secrets
  reports findings per line, so this is the granularity on which it is compared most kindly.

detect-secrets (1.5, default plugins and default filters, as ``detect-secrets scan`` runs them) scans each
snippet written to its own ``.md`` file. Its finding on line *n* with ``secret_value`` *v* becomes the spans
of each occurrence of *v* on that line (the whole line when *v* does not occur there verbatim). "Union" is
the union of our spans and detect-secrets' spans.

Throughput: ``redact`` on a generated realistic note (``realistic_note``, 5 MB by default), best of 3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import types
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest import secrets as current  # noqa: E402
from tests.secrets_corpus import (  # noqa: E402
    NEGATIVE_FAMILIES,
    POSITIVE_FAMILIES,
    SPLITS,
    Case,
    build_corpus,
    realistic_note,
)

Span = tuple[int, int]
Predictor = Callable[[list[Case]], list[list[Span]]]


# -- scoring ---------------------------------------------------------------------------------------------------


def _covered(span: Span, preds: list[Span]) -> bool:
    """True when the union of ``preds`` covers all of ``span``."""
    s, e = span
    pos = s
    for ps, pe in sorted(preds):
        if ps > pos:
            break
        pos = max(pos, pe)
        if pos >= e:
            return True
    return pos >= e


def _overlaps(a: Span, b: Span) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _line_spans(text: str, spans: Iterable[Span]) -> list[Span]:
    """Each span widened to the whole lines it touches, deduplicated."""
    out: set[Span] = set()
    for s, e in spans:
        ls = text.rfind("\n", 0, s) + 1
        le = text.find("\n", max(e - 1, s))
        out.add((ls, len(text) if le == -1 else le))
    return sorted(out)


def score(cases: list[Case], preds: list[list[Span]], *, lines: bool = False) -> dict[str, dict[str, Any]]:
    """Counts and precision/recall/F1 per family and overall (key ``"all"``)."""
    acc: dict[str, dict[str, int]] = defaultdict(lambda: {"secrets": 0, "caught": 0, "pred": 0, "tp": 0})
    for case, spans in zip(cases, preds, strict=True):
        truth = list(case.secrets)
        if lines:
            spans = _line_spans(case.text, spans)
            truth_cover = [_line_spans(case.text, [t]) for t in truth]
            caught = sum(all(_covered(x, spans) for x in tc) for tc in truth_cover)
        else:
            caught = sum(_covered(t, spans) for t in truth)
        tp = sum(any(_overlaps(p, t) for t in truth) for p in spans)
        for key in (case.family, "all"):
            a = acc[key]
            a["secrets"] += len(truth)
            a["caught"] += caught
            a["pred"] += len(spans)
            a["tp"] += tp
    out: dict[str, dict[str, Any]] = {}
    for key, a in acc.items():
        p = a["tp"] / a["pred"] if a["pred"] else 1.0
        r = a["caught"] / a["secrets"] if a["secrets"] else None
        f1 = 2 * p * r / (p + r) if r is not None and p + r else None
        out[key] = {**a, "fp": a["pred"] - a["tp"], "precision": p, "recall": r, "f1": f1}
    return out


# -- detectors -------------------------------------------------------------------------------------------------


def module_spans(mod: types.ModuleType) -> Callable[[str], list[Span]]:
    """Spans a version of ``ingest.secrets`` redacts (``find_secrets``, or its rules for older versions)."""
    if hasattr(mod, "find_secrets"):
        return lambda text: [(s, e) for s, e, _ in mod.find_secrets(text)]

    def spans(text: str) -> list[Span]:
        hits = [(s, e, k, i) for i, rule in enumerate(mod._RULES) for s, e, k in rule(text) if e > s]
        return [(s, e) for s, e, _ in mod._merge(hits)] if hits else []

    return spans


def load_revision(rev: str) -> types.ModuleType:
    """``ingest/secrets.py`` as it was at git revision ``rev``, imported under another name."""
    src = subprocess.run(
        ["git", "show", f"{rev}:ingest/secrets.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    mod = types.ModuleType(f"secrets_{rev}")
    exec(compile(src, f"secrets@{rev}", "exec"), mod.__dict__)
    return mod


def detect_secrets_spans(cases: list[Case], suffix: str = ".md") -> list[list[Span]]:
    """Spans of detect-secrets' findings (default plugins and filters), one file per case."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    out: list[list[Span]] = []
    with tempfile.TemporaryDirectory() as tmp, default_settings():
        for i, case in enumerate(cases):
            path = Path(tmp) / f"case{i}{suffix}"
            path.write_text(case.text, encoding="utf-8")
            coll = SecretsCollection()
            coll.scan_file(str(path))
            starts = [0]
            for line in case.text.split("\n"):
                starts.append(starts[-1] + len(line) + 1)
            spans: set[Span] = set()
            for _, found in coll:
                ln = found.line_number - 1
                ls, le = starts[ln], starts[ln + 1] - 1
                line = case.text[ls:le]
                value = found.secret_value or ""
                hits = [(ls + j, ls + j + len(value)) for j in _find_all(line, value)] if value else []
                spans.update(hits or [(ls, le)])
            out.append(sorted(spans))
    return out


def _find_all(hay: str, needle: str) -> list[int]:
    res, j = [], hay.find(needle)
    while j != -1:
        res.append(j)
        j = hay.find(needle, j + 1)
    return res


# -- report ----------------------------------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _table(results: dict[str, Any], split: str, granularity: str, detectors: list[str]) -> list[str]:
    head = "| family | secrets | " + " | ".join(f"{d} P / R / F1" for d in detectors) + " |"
    rows = [head, "|---|---:|" + "---|" * len(detectors)]
    fams = [*POSITIVE_FAMILIES, *NEGATIVE_FAMILIES, "all"]
    for fam in fams:
        base = results[detectors[0]][split][granularity].get(fam)
        if base is None:
            continue
        cells = []
        for d in detectors:
            m = results[d][split][granularity][fam]
            if m["secrets"]:
                cells.append(f"{_fmt(m['precision'])} / {_fmt(m['recall'])} / {_fmt(m['f1'])}")
            else:
                cells.append(f"{m['fp']} FP" if m["fp"] else "0 FP")
        name = f"**{fam}**" if fam == "all" else fam
        rows.append(f"| {name} | {base['secrets']} | " + " | ".join(cells) + " |")
    return rows


def throughput(fns: dict[str, Callable[[str], Any]], text: str, rounds: int = 5) -> dict[str, float]:
    """MB per second of CPU time of each function on ``text``: rounds alternate between the functions and
    the best round counts, so that load from other processes on a shared machine touches all alike (CPU
    time of this process, not wall time, for the same reason)."""
    mb = len(text.encode()) / 1e6
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.process_time()
            fn(text)
            best[name] = min(best[name], time.process_time() - t0)
    return {name: mb / seconds for name, seconds in best.items()}


def _summary(results: dict[str, Any], detectors: list[str]) -> list[str]:
    rows = [
        "| detector | split | span P | span R | span F1 | line P | line R | line F1 | FP spans |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for split in SPLITS:
        for d in detectors:
            sp, ln = results[d][split]["span"]["all"], results[d][split]["line"]["all"]
            rows.append(
                f"| {d} | {split} | {_fmt(sp['precision'])} | {_fmt(sp['recall'])} | {_fmt(sp['f1'])} "
                f"| {_fmt(ln['precision'])} | {_fmt(ln['recall'])} | {_fmt(ln['f1'])} | {sp['fp']} |"
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--baseline", default="5589c91", help="git revision of ingest/secrets.py before this work ('' = none)"
    )
    ap.add_argument(
        "--frozen",
        default="e2d914c",
        help="git revision of ingest/secrets.py when the 'fresh' split was written ('' = none)",
    )
    ap.add_argument(
        "--first",
        default="2993eef",
        help="git revision of the first version of the context rules, scored on 'heldout' before any fix",
    )
    ap.add_argument("--no-detect-secrets", action="store_true")
    ap.add_argument("--mb", type=float, default=5.0, help="size of the realistic note for the speed test")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "secrets")
    args = ap.parse_args()

    cases = build_corpus()
    preds: dict[str, list[list[Span]]] = {}
    ours = module_spans(current)
    preds["ours"] = [ours(c.text) for c in cases]
    revisions = {"first": args.first, "frozen": args.frozen, "baseline": args.baseline}
    modules = {name: load_revision(rev) for name, rev in revisions.items() if rev}
    for name, mod in modules.items():
        spans = module_spans(mod)
        preds[f"{name} {revisions[name]}"] = [spans(c.text) for c in cases]
    ds_seconds = 0.0
    if not args.no_detect_secrets:
        t0 = time.perf_counter()
        preds["detect-secrets"] = detect_secrets_spans(cases)
        ds_seconds = time.perf_counter() - t0
        preds["detect-secrets .yaml"] = detect_secrets_spans(cases, ".yaml")
        preds["ours + detect-secrets"] = [
            sorted(set(a) | set(b)) for a, b in zip(preds["ours"], preds["detect-secrets"], strict=True)
        ]

    results: dict[str, Any] = {}
    for name, p in preds.items():
        results[name] = {}
        for split in SPLITS:
            idx = [i for i, c in enumerate(cases) if c.split == split]
            sub, sp = [cases[i] for i in idx], [p[i] for i in idx]
            results[name][split] = {"span": score(sub, sp), "line": score(sub, sp, lines=True)}

    note = realistic_note(int(args.mb * 1e6))
    speed: dict[str, float] = {"note_mb": round(len(note.encode()) / 1e6, 2)}
    fns = {"ours": current.redact} | (
        {"baseline": modules["baseline"].redact} if "baseline" in modules else {}
    )
    speed |= {f"{name}_mb_s": v for name, v in throughput(fns, note).items()}
    if ds_seconds:
        speed["detect_secrets_k_chars_s"] = sum(len(c.text) for c in cases) / 1e3 / ds_seconds

    meta: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cases": {
            s: {
                "positive": sum(c.positive and c.split == s for c in cases),
                "negative": sum(not c.positive and c.split == s for c in cases),
                "secrets": sum(len(c.secrets) for c in cases if c.split == s),
            }
            for s in SPLITS
        },
        "revisions": revisions,
        "load_average_1min": os.getloadavg()[0],  # the machine is shared; throughput depends on it
        "redactor_version": getattr(current, "REDACTOR_VERSION", None),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "speed": speed, "results": results}, indent=1) + "\n"
    )

    detectors = list(preds)
    family_cols = [d for d in detectors if d != "detect-secrets .yaml" and not d.startswith("first")]
    md = [
        "# Secret detection: precision and recall",
        "",
        "Generated by `python bench/bench_secrets.py` (method in its docstring) on the labelled corpus",
        "`tests/secrets_corpus.py`. Splits: `tune` (developed against), `heldout` (other wordings, written with",
        f"`tune` but never tuned on), `fresh` (written after the detector was frozen at `{args.frozen}`; the",
        f"`frozen {args.frozen}` row is its honest first score, `ours` is after the changes it prompted).",
        f"`first {args.first}` is the first version of the context rules, before fixes for `tune` misses.",
        f"`baseline {args.baseline}` is the redactor before this work. Redactor version {meta['redactor_version']}.",
        "",
        "| split | positive snippets | negative snippets | secrets |",
        "|---|---:|---:|---:|",
        *[f"| {s} | {v['positive']} | {v['negative']} | {v['secrets']} |" for s, v in meta["cases"].items()],
        "",
        "## Overall",
        "",
        *_summary(results, detectors),
        "",
    ]
    for split in SPLITS:
        md += [f"## Per family, {split}, span level", "", *_table(results, split, "span", family_cols), ""]
    md += [
        "## Reading these figures",
        "",
        "- `tune` and `heldout` were written by the same hand, before the context rules; no rule was changed",
        "  for a `heldout` case, but its overall table was seen once after the first version (6 false",
        "  positives, `ssh host` followed by `python3`), and a unit test with that shape was added later. The",
        "  `first` row is therefore the cleaner `heldout` figure.",
        "- `fresh` was written after the detector was frozen, to probe generalisation: the `frozen` row (recall",
        "  0.59 on it) is the honest estimate of what a new wording costs. The fixes it prompted are general",
        "  rules (see the commit after the freeze), but `ours` on `fresh` is no longer a held-out figure.",
        "- detect-secrets 1.5 runs with its default plugins and filters, each snippet in its own file (`.md`,",
        "  and `.yaml`, its best file type here); a finding on line n with value v counts as the spans of v on",
        '  that line. Its keyword plugin wants `key = "value"` shapes and its entropy plugins quoted strings,',
        "  so it misses the context shapes and flags checksums, code and base64 images. The union with ours",
        "  gains no recall on any split and only adds those false positives: it is not used.",
        "",
    ]
    md += [
        "## Throughput",
        "",
        f"`redact` on a {speed['note_mb']} MB generated note (`realistic_note`): MB per CPU-second of the",
        "process, best of 5 rounds that alternate between the two versions (the machine is shared, 2 cores,",
        f"1-minute load average {meta['load_average_1min']:.1f} at the end of the run):",
        "",
    ]
    md += [f"- ours: {speed['ours_mb_s']:.2f} MB/s"]
    if "baseline_mb_s" in speed:
        md += [f"- baseline {args.baseline}: {speed['baseline_mb_s']:.2f} MB/s"]
    if ds_seconds:
        md += [
            f"- detect-secrets: {speed['detect_secrets_k_chars_s']:.0f} k characters/s on the corpus (one file per snippet)"
        ]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
