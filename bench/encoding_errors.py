"""Confusion list of the lossy mojibake repair: which characters come back wrong, and as what.

For each loss pattern and text set (as in ``bench/bench_encoding.py``), mangle, repair and
count (original, repaired) pairs over the CJK positions that differ, with a few contexts each.

Run: ``python bench/encoding_errors.py [--set notes|cmrc|xquad|samples] [--pattern real] [--top 30]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_encoding import PATTERNS, is_cjk, mangle_losing  # noqa: E402
from bench.note_text import note_paragraphs  # noqa: E402
from ingest import encoding  # noqa: E402

EVAL_DIR = ROOT.parent / "shared" / "eval"


def load_jsonl(name: str, n: int, skip: int = 0) -> list[str]:
    out: list[str] = []
    with (EVAL_DIR / name / "corpus.jsonl").open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < skip:
                continue
            text = json.loads(line)["text"].strip()
            if text:
                out.append(text)
            if len(out) >= n:
                break
    return out


def text_set(name: str, n: int) -> list[str]:
    if name == "notes":
        return note_paragraphs(n)
    if name == "notes-file":
        return ["\n\n".join(note_paragraphs(n))]
    if name == "cmrc":
        return load_jsonl("cmrc2018_dev_zh", n)
    if name == "cmrc-tune":  # paragraphs after the bench's first 300
        return load_jsonl("cmrc2018_dev_zh", n, skip=300)
    if name == "xquad":
        return load_jsonl("xquad_zh", n)
    if name == "samples":
        return [
            p.read_text(encoding="utf-8")
            for p in sorted((ROOT / "samples" / "notes").rglob("*"))
            if p.is_file()
        ]
    raise SystemExit(f"unknown set {name}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", default="notes")
    parser.add_argument("--pattern", default="real")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--examples", type=int, default=3)
    parser.add_argument(
        "--const", action="append", default=[], help="NAME=VALUE: set an ingest.encoding constant"
    )
    args = parser.parse_args()
    for item in args.const:
        name, value = item.split("=", 1)
        setattr(encoding, name, type(getattr(encoding, name))(value))
    docs = text_set(args.set, args.n)
    mangle = mangle_losing(PATTERNS[args.pattern])
    confusions: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[str]] = defaultdict(list)
    total = wrong = 0
    for doc in docs:
        fixed, _ = encoding.repair_mojibake(mangle(doc))
        total += sum(map(is_cjk, doc))
        if len(fixed) != len(doc):
            print("length differs:", doc[:40], file=sys.stderr)
            continue
        for i, (a, b) in enumerate(zip(doc, fixed, strict=True)):
            if a != b and is_cjk(a):
                wrong += 1
                confusions[(a, b)] += 1
                if len(examples[(a, b)]) < args.examples:
                    examples[(a, b)].append(doc[max(0, i - 6) : i] + "[" + b + "]" + doc[i + 1 : i + 7])
    print(f"{args.set} {args.pattern}: {wrong} wrong of {total} CJK ({1 - wrong / total:.2%} right)")
    for (a, b), n in confusions.most_common(args.top):
        ctx = " | ".join(e.replace("\n", " ") for e in examples[(a, b)])
        print(f"{n:5d} {a}->{b}  {ctx}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
