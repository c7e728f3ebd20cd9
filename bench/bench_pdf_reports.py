"""PDF extraction on real table-heavy reports: pages/s, peak memory and what is kept, before and after.

Run from the repository root::

    python bench/bench_pdf_reports.py                  # all PDFs in ../shared/eval/pdf_reports_en/docs
    python bench/bench_pdf_reports.py --no-write --large-pages 0   # quick look, no memory check
    python bench/bench_pdf_reports.py --render         # rewrite the .md from the last .json

"Before" is ``ingest/pdf.py`` as of ``--baseline`` (a commit; its file is read with ``git show``
and imported as a module of its own), "after" is the working tree's ``ingest/pdf.py``, so both
run in one invocation on the same machine. Each configuration runs in its own Python process
(its peak RSS is its own, and includes the interpreter and ``import pymupdf``) and extracts every
PDF of ``--docs`` in turn, after a warm-up on a two-page PDF:

* ``get_text``: ``page.get_text()`` per page (the floor: no structure);
* ``before``: ``extract_pdf`` at ``--baseline`` (tables by ``page.find_tables`` per ruled region);
* ``after``: ``extract_pdf`` now (tables from the page's rules and the text already read);
* ``after-no-tables``: the same with ``tables=False``.

Then one more process runs ``before`` and ``after`` interleaved, file by file, alternating
which goes first, so that their ratio is taken under the same load. Fidelity compares the page texts of ``before`` and ``after``: markdown table rows (all cells
equal), table rows kept under the same header row, heading lines, and pages whose text outside
tables is identical. A memory check extracts generated PDFs of ``--small-pages`` and
``--large-pages`` pages (``tests.factories_pdf.make_mixed_pdf``: a ruled table on every fourth
page) and reports the peak RSS of each. Writes ``bench/results/pdf_reports.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_pdf_extract import _peak_rss_mb  # noqa: E402  (VmHWM, not ru_maxrss: see there)

DEFAULT_DOCS = ROOT.parent / "shared" / "eval" / "pdf_reports_en" / "docs"
DEFAULT_BASELINE = "7aed212"  # the last commit whose extractor called page.find_tables
JSON_OUT = ROOT / "bench" / "results" / "pdf_reports.json"
MD_OUT = ROOT / "bench" / "results" / "pdf_reports.md"
CONFIGS = ["get_text", "after", "before", "after-no-tables"]


# --- worker side (one configuration per process) ---------------------------------------------------


def _load_baseline(commit: str, tmp: Path) -> Any:
    source = subprocess.run(
        ["git", "show", f"{commit}:ingest/pdf.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = tmp / "pdf_baseline.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("pdf_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pdf_baseline"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _runner(config: str, baseline: str, tmp: Path) -> Callable[[bytes], list[str]]:
    import pymupdf

    def per_page(doc: Any) -> list[str]:
        return [doc.text[s.start : s.end] for s in doc.pages]

    if config == "get_text":

        def run(data: bytes) -> list[str]:
            with pymupdf.open(stream=data, filetype="pdf") as doc:
                return [page.get_text() for page in doc]

        return run
    if config == "before":
        extract = _load_baseline(baseline, tmp).extract_pdf
    else:
        from ingest.pdf import extract_pdf as extract
    tables = config != "after-no-tables"
    return lambda data: per_page(extract(data, tables=tables))


def _cpu() -> float:
    """CPU seconds this process has used (user + system): what the extraction cost, whatever
    else the machine was running."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(config: str, files_json: str, out_path: str, baseline: str) -> None:
    files = [Path(f) for f in json.loads(files_json)]
    with tempfile.TemporaryDirectory() as tmp:
        run = _runner(config, baseline, Path(tmp))
        from tests.factories_pdf import make_pdf, para

        run(make_pdf([[para("warm-up page " * 20)]] * 2))
        rss_ready = _peak_rss_mb()
        load_start = os.getloadavg()[0]
        per_file: dict[str, dict[str, Any]] = {}
        pages: dict[str, list[str]] = {}
        total = cpu_total = 0.0
        for f in files:
            data = f.read_bytes()
            start, cpu_start = time.perf_counter(), _cpu()
            texts = run(data)
            seconds, cpu = time.perf_counter() - start, _cpu() - cpu_start
            total += seconds
            cpu_total += cpu
            per_file[f.name] = {"pages": len(texts), "seconds": round(seconds, 3), "cpu_s": round(cpu, 3)}
            pages[f.name] = texts
        peak = _peak_rss_mb()
    Path(out_path).write_text(json.dumps(pages, ensure_ascii=False), encoding="utf-8")
    result = {
        "seconds": total,
        "cpu_seconds": cpu_total,
        "n_pages": sum(v["pages"] for v in per_file.values()),
        "rss_ready_mb": rss_ready,
        "peak_rss_mb": peak,
        "load_average": [load_start, os.getloadavg()[0]],
        "per_file": per_file,
    }
    print("\n" + json.dumps(result))


def _interleaved_worker(files_json: str, baseline: str) -> None:
    """``before`` and ``after`` in one process, file by file, alternating which goes first: the
    ratio of their costs under the same load."""
    files = [Path(f) for f in json.loads(files_json)]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {c: _runner(c, baseline, Path(tmp)) for c in ("before", "after")}
        from tests.factories_pdf import make_pdf, para

        warm = make_pdf([[para("warm-up page " * 20)]] * 2)
        for run in runs.values():
            run(warm)
        seconds = dict.fromkeys(runs, 0.0)
        cpu = dict.fromkeys(runs, 0.0)
        load_start = os.getloadavg()[0]
        for i, f in enumerate(files):
            data = f.read_bytes()
            for config in ("before", "after") if i % 2 == 0 else ("after", "before"):
                start, cpu_start = time.perf_counter(), _cpu()
                runs[config](data)
                seconds[config] += time.perf_counter() - start
                cpu[config] += _cpu() - cpu_start
    result = {"seconds": seconds, "cpu_seconds": cpu, "load_average": [load_start, os.getloadavg()[0]]}
    print("\n" + json.dumps(result))


def _run_worker(config: str, files: list[Path], out_path: Path, baseline: str) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            config,
            json.dumps([str(f) for f in files]),
            str(out_path),
            baseline,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{config} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- fidelity ---------------------------------------------------------------------------------------

_SEPARATOR_ROW = re.compile(r"\|( --- \|)+")


def md_tables(text: str) -> list[list[str]]:
    """The markdown tables of a page, each as its row lines (header first, separator dropped)."""
    tables: list[list[str]] = []
    current: list[str] | None = None
    for line in text.split("\n"):
        if line.startswith("|") and line.endswith("|") and len(line) > 1:
            if _SEPARATOR_ROW.fullmatch(line):
                continue
            if current is None:
                current = []
                tables.append(current)
            current.append(line)
        else:
            current = None
    return tables


def _outside_tables(text: str) -> list[str]:
    return [ln for ln in text.split("\n") if not (ln.startswith("|") and ln.endswith("|"))]


def fidelity(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, Any]:
    """What ``after`` keeps of ``before``, page by page."""
    n: Counter[str] = Counter()
    changed_pages: list[str] = []
    for name, old_pages in before.items():
        for number, (old, new) in enumerate(zip(old_pages, after[name], strict=True), start=1):
            old_tables, new_tables = md_tables(old), md_tables(new)
            old_rows = Counter(r for t in old_tables for r in t)
            new_rows = Counter(r for t in new_tables for r in t)
            n["pages"] += 1
            n["pages_identical"] += old == new
            n["pages_same_text_outside_tables"] += _outside_tables(old) == _outside_tables(new)
            n["tables_before"] += len(old_tables)
            n["tables_after"] += len(new_tables)
            n["rows_before"] += sum(old_rows.values())
            n["rows_after"] += sum(new_rows.values())
            n["rows_kept"] += sum((old_rows & new_rows).values())
            for table in old_tables:
                n["body_rows_before"] += len(table) - 1
                under_same_header = [t for t in new_tables if t[0] == table[0]]
                n["body_rows_kept_with_header"] += sum(
                    1 for row in table[1:] if any(row in t[1:] for t in under_same_header)
                )
            old_h = Counter(ln for ln in old.split("\n") if ln.startswith("#"))
            new_h = Counter(ln for ln in new.split("\n") if ln.startswith("#"))
            n["headings_before"] += sum(old_h.values())
            n["headings_after"] += sum(new_h.values())
            n["headings_kept"] += sum((old_h & new_h).values())
            # A heading line of before that is gone may have been a table cell set in bold.
            cells = {c.strip() for t in new_tables for row in t for c in row.strip("|").split(" | ")}
            n["headings_gone_into_table_cells"] += sum(
                k
                for h, k in (old_h - new_h).items()
                if h.lstrip("#").strip() in cells or any(h.lstrip("#").strip() in c for c in cells)
            )
            if old != new:
                changed_pages.append(f"{name} p{number}")
    return {**dict(n), "changed_pages": changed_pages}


# --- memory on generated PDFs -----------------------------------------------------------------------


def _memory_worker(pdf_path: str) -> None:
    from ingest.pdf import extract_pdf
    from tests.factories_pdf import make_pdf, para

    extract_pdf(make_pdf([[para("warm-up page " * 20)]] * 2))
    data = Path(pdf_path).read_bytes()
    ready = _peak_rss_mb()
    start = time.perf_counter()
    doc = extract_pdf(data)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()
    assert doc.pages is not None
    result = {
        "pages": len(doc.pages),
        "pdf_mb": len(data) / 1e6,
        "text_mb": len(doc.text.encode()) / 1e6,
        "seconds": seconds,
        "rss_ready_mb": ready,
        "peak_rss_mb": peak,
    }
    print("\n" + json.dumps(result))


def _memory(n_pages: int, tmp: Path) -> dict[str, Any]:
    from tests.factories_pdf import make_mixed_pdf

    path = tmp / f"mixed{n_pages}.pdf"
    path.write_bytes(make_mixed_pdf(n_pages, seed=11))
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-worker", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory check failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- driver ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="folder of PDFs")
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="commit of the 'before' extractor")
    ap.add_argument("--small-pages", type=int, default=250, help="generated PDF for the memory check")
    ap.add_argument("--large-pages", type=int, default=2000, help="0 skips the memory check")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    args = ap.parse_args()

    files = sorted(args.docs.glob("*.pdf"))
    if not files:
        raise SystemExit(f"no PDFs in {args.docs}")
    results: dict[str, dict[str, Any]] = {}
    memory: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for config in CONFIGS:
            r = _run_worker(config, files, tmpdir / f"{config}.json", args.baseline)
            results[config] = r
            print(
                f"{config:16s} {r['n_pages']:5d} pages {r['seconds']:7.1f} s "
                f"{r['n_pages'] / r['seconds']:6.1f} pages/s (CPU {r['cpu_seconds']:.1f} s, "
                f"{r['n_pages'] / r['cpu_seconds']:.1f} pages per CPU-second)  peak RSS {r['peak_rss_mb']:5.0f} MB  "
                f"load {r['load_average'][0]:.1f}->{r['load_average'][1]:.1f}",
                flush=True,
            )
        proc = subprocess.run(
            [sys.executable, __file__, "--interleaved", json.dumps([str(f) for f in files]), args.baseline],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        interleaved = json.loads(proc.stdout.strip().splitlines()[-1])
        print("interleaved", json.dumps(interleaved), flush=True)
        pages = {c: json.loads((tmpdir / f"{c}.json").read_text(encoding="utf-8")) for c in CONFIGS}
        fid = fidelity(pages["before"], pages["after"])
        print("fidelity", json.dumps({k: v for k, v in fid.items() if k != "changed_pages"}))
        if args.large_pages:
            for n in (args.small_pages, args.large_pages):
                memory[str(n)] = _memory(n, tmpdir)
                print(f"memory {n} pages: {json.dumps(memory[str(n)])}", flush=True)
    if not args.no_write:
        import platform

        import pymupdf

        report = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
            f"Python {platform.python_version()}, PyMuPDF {pymupdf.VersionBind}",
            "docs": str(args.docs.relative_to(ROOT.parent))
            if args.docs.is_relative_to(ROOT.parent)
            else str(args.docs),
            "n_files": len(files),
            "baseline": args.baseline,
            "load_average_end": [round(x, 1) for x in os.getloadavg()],
            "throughput": results,
            "fidelity": fid,
            "memory": memory,
            "interleaved": interleaved,
        }
        JSON_OUT.parent.mkdir(parents=True, exist_ok=True)
        JSON_OUT.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        MD_OUT.write_text(render(report), encoding="utf-8")
        print(f"wrote {JSON_OUT.relative_to(ROOT)} and {MD_OUT.relative_to(ROOT)}")


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "n/a"


def render(report: dict[str, Any]) -> str:
    res, fid, mem = report["throughput"], report["fidelity"], report["memory"]

    def pps(config: str) -> float:
        return float(res[config]["n_pages"] / res[config]["seconds"])

    lines = [
        "# PDF extraction on real table-heavy reports",
        "",
        f"Measured with `python bench/bench_pdf_reports.py` ({report['machine']}, shared with other "
        f"work: load average per row below). Input: all {report['n_files']} PDFs of `{report['docs']}` "
        f"({res['after']['n_pages']} pages of US federal agency annual reports, most pages with ruled "
        f"or shaded tables). `before` is `ingest/pdf.py` at commit `{report['baseline']}`, imported "
        "from `git show` in the same run; each row is its own process over all files, timed after a "
        "warm-up; peak RSS includes the interpreter and `import pymupdf` (≈150 MB).",
        "",
        "| configuration | pages | seconds | pages/s | CPU seconds | pages per CPU-second "
        "| peak RSS MB | load average (start → end) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for config, r in res.items():
        lines.append(
            f"| {config} | {r['n_pages']} | {r['seconds']:.1f} | {pps(config):.1f} | "
            f"{r['cpu_seconds']:.1f} | {r['n_pages'] / r['cpu_seconds']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['load_average'][0]:.1f} → {r['load_average'][1]:.1f} |"
        )
    speedup = pps("after") / pps("before")
    cpu_speedup = res["before"]["cpu_seconds"] / res["after"]["cpu_seconds"]
    lines += [
        "",
        f"With tables on, extraction went from {pps('before'):.1f} to {pps('after'):.1f} pages/s "
        f"(×{speedup:.1f} in wall time, ×{cpu_speedup:.1f} in CPU time, in this run); bare `get_text` "
        f"ran at {pps('get_text'):.0f} pages/s and `after` without tables at "
        f"{pps('after-no-tables'):.0f}. Wall time depends on what else the shared machine ran; CPU "
        "seconds are what the extraction itself cost (they too grow when the cores are contended).",
    ]
    il = report.get("interleaved")
    if il:
        n_pages = res["after"]["n_pages"]
        lines += [
            "",
            "Interleaved in one process (file by file, alternating which runs first, so both see "
            f"the same load: {il['load_average'][0]:.1f} → {il['load_average'][1]:.1f}):",
            "",
            "| | seconds | pages/s | CPU seconds | pages per CPU-second |",
            "|---|---:|---:|---:|---:|",
        ]
        for config in ("before", "after"):
            lines.append(
                f"| {config} | {il['seconds'][config]:.1f} | {n_pages / il['seconds'][config]:.1f} | "
                f"{il['cpu_seconds'][config]:.1f} | {n_pages / il['cpu_seconds'][config]:.1f} |"
            )
        lines += [
            "",
            f"`after` / `before`: ×{il['seconds']['before'] / il['seconds']['after']:.1f} in wall time, "
            f"×{il['cpu_seconds']['before'] / il['cpu_seconds']['after']:.1f} in CPU time.",
        ]
    lines += [
        "",
        "## What is kept (`before` → `after`, every page of every file)",
        "",
        "| measure | before | after | kept by after |",
        "|---|---:|---:|---:|",
        f"| markdown tables | {fid['tables_before']} | {fid['tables_after']} | |",
        f"| table rows (all cells equal) | {fid['rows_before']} | {fid['rows_after']} | "
        f"{fid['rows_kept']} ({_pct(fid['rows_kept'], fid['rows_before'])}) |",
        f"| body rows under the same header row | {fid['body_rows_before']} | | "
        f"{fid['body_rows_kept_with_header']} "
        f"({_pct(fid['body_rows_kept_with_header'], fid['body_rows_before'])}) |",
        f"| heading lines | {fid['headings_before']} | {fid['headings_after']} | "
        f"{fid['headings_kept']} ({_pct(fid['headings_kept'], fid['headings_before'])}) |",
        f"| heading lines of before now inside a table cell | | | "
        f"{fid['headings_gone_into_table_cells']} of {fid['headings_before'] - fid['headings_kept']} "
        "gone |",
        f"| pages with identical text | | | {fid['pages_identical']} of {fid['pages']} |",
        f"| pages with identical text outside tables | | | "
        f"{fid['pages_same_text_outside_tables']} of {fid['pages']} |",
        "",
        HAND_CHECK,
    ]
    if mem:
        lines += [
            "",
            "## Memory on large PDFs",
            "",
            "Generated PDFs (`make_mixed_pdf`, a ruled table on every fourth page), each extracted "
            "in its own process:",
            "",
            "| pages | PDF MB | extracted text MB | seconds | RSS before MB | peak RSS MB |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for m in mem.values():
            lines.append(
                f"| {m['pages']} | {m['pdf_mb']:.1f} | {m['text_mb']:.1f} | {m['seconds']:.1f} | "
                f"{m['rss_ready_mb']:.0f} | {m['peak_rss_mb']:.0f} |"
            )
        lines += ["", memory_note(mem)]
    lines += ["", HOW_IT_WORKS, ""]
    return "\n".join(lines)


HAND_CHECK = """### Checked by hand

Six pages with tables, drawn at random (seed 2026) from the `after` output, were rendered to PNG \
with PyMuPDF and read against the extracted text: 2015 report p50, 2018 report p33, DOC2022 \
p35 and p47, DOT2022 p69, HHS2022 p74. Every table on them came out with the right rows, columns \
and cell text, a cell spanning two rows placed in its first row (DOC2022 p35, a KPI grid with \
`Target`/`Actual` rows) and merged header cells placed in their first column (2015 p50). Four \
pages are identical to `before`. On 2018 p33 `after` finds a table that `before` missed: its \
header is a shaded band and its body has no rules, so `before`'s region test turned it down and \
the header cells came out as nine `######` heading lines. The duplicated words in that header \
(`Performance Measur e Performance Measure`) are in the PDF's text layer, hidden behind the \
visible text; both paths keep them. The reports also carry invisible placeholder strings \
(`PLACEHOLDER_72`, `_b4fbf496-…`) in their text layer, kept by both.

Where the two paths differ (the pages not identical above), the differences seen, in order of \
frequency: (1) `after` finds tables whose grid is closed only by the outline of their shading \
(OPM 2016–2020 reports: milestone tables, objective lists, the last row of a results table that \
`before` left as loose lines), e.g. 2020 report p13, four `OBJECTIVE | OBJECTIVE STATEMENT` \
tables that `before` left as heading lines and paragraphs; (2) `after` fills first-column cells \
(`1.01A`, `1.02B`) that `before` left empty, because `before` clipped the rules to a region that \
cut the table's outline; (3) on one chart page (2014 report p23) both paths make a meaningless \
table of the bar labels, with different columns. No page has fewer tables in `after` than in \
`before`. The rows of `before` not found verbatim in `after` sit on 39 pages; on the ones read \
(2016 p42, 2017 p20, 2018 p44, 2020 p50, 2015 p28) `after`'s row has the same cells with text \
`before` had cut or left out: `4.01A` where `before` had `.01A` (its clip cut the first \
character), `≥4.9 | Met` where `before` had empty cells, a measure name in a first cell \
`before` left empty."""


def memory_note(mem: dict[str, Any]) -> str:
    small, large = (mem[k] for k in sorted(mem, key=int))
    growth = large["peak_rss_mb"] - large["rss_ready_mb"]
    text_ratio = growth / large["text_mb"] if large["text_mb"] else 0.0
    return (
        f"From {small['pages']} to {large['pages']} pages the peak RSS grew from "
        f"{small['peak_rss_mb']:.0f} to {large['peak_rss_mb']:.0f} MB: extraction itself added "
        f"{growth:.0f} MB over the process before it ({text_ratio:.1f}× the {large['text_mb']:.1f} MB "
        "of extracted text, which the result holds anyway, plus the PDF's own bytes). Pages are read "
        "one at a time; until the document's styles are known each page waits as packed lines (text "
        "plus a few numbers per line; its text dicts, drawings and span lists are dropped once its "
        "tables are built) and is freed once rendered. (Kept as one Python object per line, as "
        "before this change, the 2,000-page PDF added 38 MB.) "
        "`tests/test_pdf.py::test_large_pdf_memory_follows_the_text_not_the_pages` checks the Python "
        "heap on 120 and 480 pages: its peak stays under 5 bytes per byte of extracted "
        "text, the same per byte at both sizes."
    )


HOW_IT_WORKS = """## Where the time went, and what changed

Profile of `before` on two reports (as measured when the problem was reported): 22.5 s of 25.4 s inside table detection, for 182 of ~230 \
pages that passed the grid pre-filter, PyMuPDF's `make_chars` (a Python dict per character of the \
clipped area, per `find_tables` call) alone 13.5 s; `find_tables` also reads the page's drawings \
again through `get_drawings` and builds a text page of its own.

`after` does not call `find_tables` (kept in `ingest/pdf.py` as `_find_tables_mupdf`, the \
reference the tests compare against). Per page it makes one `get_cdrawings()` call and turns \
straight lines, thin rectangles and the sides of other rectangles and quads into horizontal and \
vertical rule pieces. Pre-filter: a page goes on only with three horizontal and three vertical \
pieces, and only where at least three of each touch (within 2 pt); everything else on the page \
is ignored. In those regions the pieces are snapped (within 3 pt across) and joined (gaps up to \
3 pt), shorter than 3 pt dropped, and the outline of each group of touching paths that holds text \
is added (this closes tables drawn as shaded cells or as rows between hairlines). Crossings give \
cells (the smallest rectangle whose corners are crossings joined by rules), cells sharing a corner \
give a table, and a table needs two rows, two columns and text in two cells. Cell text comes from \
the spans of the page's text dict, already read for headings and paragraphs: a span inside one \
cell goes there whole, and only a span that crosses a cell border is split by character (from \
the same text page's raw dict). Profile of `after` on all 1,600 pages (cProfile): building the \
text page, its dict and the lines ≈40% of the time, `get_cdrawings` ≈10%, the table work in \
Python ≈20–25%.

Not done: pages of one PDF are not spread over ingest workers (files are; a single 1,000-page \
report still runs on one core); tables without vertical rules or shading (only horizontal \
hairlines) stay lines; rotated pages are read in unrotated coordinates like the rest."""


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--interleaved":
        _interleaved_worker(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 6 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    elif len(sys.argv) == 3 and sys.argv[1] == "--memory-worker":
        _memory_worker(sys.argv[2])
    elif sys.argv[1:] == ["--render"]:
        MD_OUT.write_text(render(json.loads(JSON_OUT.read_text(encoding="utf-8"))), encoding="utf-8")
    else:
        main()
