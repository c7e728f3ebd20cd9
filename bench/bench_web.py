"""Benchmark the web page's own latency: time to first token on screen vs the API's, with a scripted LLM.

    python bench/bench_web.py                      # N=20 each, first token after 250 ms, 50 ms between tokens
    python bench/bench_web.py --runs 50 --first-delay 0.5 --delay 0.02

Set-up: the Ollama-protocol test server (``tests/ollama_stub.py``) answers every chat with the same
scripted reply (a fixed delay before the first token, a fixed delay between tokens). ``rag serve`` runs
as its own process over the web tests' notes (``tests/web_corpus.py``: markdown notes and a two-page
PDF, sparse index) and points at the stub. Then:

1. API: ``POST /v1/ask`` with ``stream: true`` through httpx; timed from sending the request to the
   first ``token`` event, to the last ``token`` event and to the end of the stream.
2. Page: headless Chromium (Playwright, ``RAG_CHROMIUM`` or ``chromium`` on the PATH) loads ``/``, the
   question is typed into ``data-testid=question`` and Enter is pressed. A keydown listener (capture
   phase, so before the page's own handler) stamps Enter with ``performance.now()``; a MutationObserver
   on the conversation stamps the first and the last change of the answer's text, and the end of the
   answer (``aria-busy`` removed); the frame after the first text is stamped too (``requestAnimationFrame``).

Each run is a fresh question with no conversation history (the page is reloaded), so no condensing
call is made. Two warm-up runs of each are not counted. Results: bench/results/web.json and web.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.ollama_stub import LLMStub, Script  # noqa: E402
from tests.web_corpus import web_settings  # noqa: E402

QUESTION = "Which port does Ollama listen on?"
#: 20 pieces; the reply cites [1] (the ollama-en.md note) at the end, as a model would.
TOKENS = [
    "Ollama",
    " listens",
    " on",
    " port",
    " 11434",
    " by",
    " default",
    ";",
    " set",
    " OLLAMA",
    "_HOST",
    " to",
    " change",
    " the",
    " address",
    " it",
    " binds",
    " to",
    " [1]",
    ".",
]

OBSERVER_JS = """() => {
  const w = window;
  w.__bench = { enter: null, first: null, firstFrame: null, last: null, done: null, text: "" };
  const b = w.__bench;
  w.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && b.enter === null) b.enter = performance.now();
  }, true);
  const turns = document.querySelector("#turns");
  const obs = new MutationObserver(() => {
    const now = performance.now();
    const node = turns.querySelector('[data-testid="answer"]');
    if (!node) return;
    const text = node.textContent;
    if (text && text !== b.text) {
      if (b.first === null) {
        b.first = now;
        requestAnimationFrame(() => { b.firstFrame = performance.now(); });
      }
      b.last = now;
      b.text = text;
    }
    if (b.done === null && b.first !== null && !node.hasAttribute("aria-busy")) b.done = now;
  });
  obs.observe(turns, { subtree: true, childList: true, characterData: true, attributes: true,
                       attributeFilter: ["aria-busy"] });
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, llm_url: str, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        RAG_DATA_DIR=str(data_dir),
        RAG_EMBEDDING__MODEL="none",
        RAG_LLM__URL=llm_url,
        RAG_LLM__MODEL="stub-model",
        RAG_LLM__RETRIES="0",
        RAG_API__PUBLISH_INTERVAL_S="0.05",
    )
    rag = Path(sys.executable).with_name("rag")
    cmd = [str(rag), "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rag serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code < 500:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("rag serve did not start")


def api_run(client: httpx.Client, url: str) -> dict[str, float]:
    body = {"question": QUESTION, "stream": True}
    t0 = time.perf_counter()
    first = last = None
    event = ""
    with client.stream("POST", url + "/v1/ask", json=body, headers={"accept": "text/event-stream"}) as res:
        res.raise_for_status()
        for line in res.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "error":
                raise RuntimeError(line)
            elif line.startswith("data:") and event == "token":
                now = time.perf_counter()
                if first is None:
                    first = now
                last = now
    end = time.perf_counter()
    if first is None or last is None:
        raise RuntimeError("no token event")
    return {"first_ms": (first - t0) * 1000, "last_ms": (last - t0) * 1000, "done_ms": (end - t0) * 1000}


def page_run(page: Any, url: str) -> dict[str, float]:
    page.goto(url + "/")
    page.wait_for_load_state("load")
    page.evaluate(OBSERVER_JS)
    question = page.get_by_test_id("question")
    question.fill(QUESTION)
    question.press("Enter")
    page.wait_for_function("() => window.__bench.done !== null && window.__bench.firstFrame !== null")
    b = page.evaluate("() => window.__bench")
    expected = "".join(TOKENS)
    if b["text"].strip() != expected:
        raise RuntimeError(f"unexpected answer on the page: {b['text']!r}")
    enter = b["enter"]
    return {
        "first_ms": b["first"] - enter,
        "first_frame_ms": b["firstFrame"] - enter,
        "last_ms": b["last"] - enter,
        "done_ms": b["done"] - enter,
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        out[key] = {
            "p50": statistics.median(values),
            "p95": pct(values, 0.95),
            "min": min(values),
            "max": max(values),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--first-delay", type=float, default=0.25, help="seconds before the stub's first token")
    ap.add_argument("--delay", type=float, default=0.05, help="seconds between the stub's tokens")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("RAG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no Chromium: apt-get install chromium, or set RAG_CHROMIUM")
    script = Script(tokens=TOKENS, first_delay=args.first_delay, delay=args.delay)
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="bench-web-") as tmp,
        LLMStub({"stub-model": 8192}, script) as stub,
    ):
        settings = web_settings(Path(tmp), stub.url)
        port = free_port()
        proc = start_server(settings.data_dir, stub.url, port)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(timeout=60) as client:
                for _ in range(args.warmup):
                    api_run(client, url)
                api = [api_run(client, url) for _ in range(args.runs)]
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.set_default_timeout(60_000)
                for _ in range(args.warmup):
                    page_run(page, url)
                web = [page_run(page, url) for _ in range(args.runs)]
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    load_after = os.getloadavg()

    a, w = summary(api), summary(web)
    result = {
        "runs": args.runs,
        "warmup": args.warmup,
        "stub": {"first_delay_s": args.first_delay, "delay_s": args.delay, "tokens": len(TOKENS)},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_avg_before": load_before,
        "load_avg_after": load_after,
        "api": a,
        "page": w,
        "overhead_first_ms": {q: w["first_ms"][q] - a["first_ms"][q] for q in ("p50", "p95")},
        "overhead_last_ms": {q: w["last_ms"][q] - a["last_ms"][q] for q in ("p50", "p95")},
        "api_runs": api,
        "page_runs": web,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "web.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / "web.md").write_text(report(result, sys.argv[1:]), encoding="utf-8")
    print(report(result, sys.argv[1:]))


def report(r: dict[str, Any], argv: list[str]) -> str:
    a, w = r["api"], r["page"]
    stub = r["stub"]
    ideal_last = (stub["first_delay_s"] + (stub["tokens"] - 1) * stub["delay_s"]) * 1000

    def row(name: str, api_key: str | None, page_key: str) -> str:
        cells = [name]
        for q in ("p50", "p95"):
            api_v = a[api_key][q] if api_key else None
            cells += [f"{api_v:.0f}" if api_v is not None else "—", f"{w[page_key][q]:.0f}"]
            cells.append(f"{w[page_key][q] - api_v:+.0f}" if api_v is not None else "—")
        return "| " + " | ".join(cells) + " |"

    lb, la = r["load_avg_before"], r["load_avg_after"]
    cmd = "python bench/bench_web.py" + (" " + " ".join(argv) if argv else "")
    lines = [
        "# The web page's latency: first token on screen vs the API's",
        "",
        f"The LLM is the scripted Ollama-protocol stub (`tests/ollama_stub.py`): {stub['tokens']} tokens, the "
        f"first {stub['first_delay_s'] * 1000:.0f} ms after the request, then one every "
        f"{stub['delay_s'] * 1000:.0f} ms (so the last token leaves the stub at about {ideal_last:.0f} ms plus "
        "retrieval). `rag serve` runs as its own process over the web tests' notes (markdown and a PDF, "
        "sparse index). API: `POST /v1/ask` with `stream: true` through httpx, from sending the request to "
        "the first and last `token` events. Page: headless Chromium via Playwright, from the Enter key in the "
        "question box (keydown, capture phase) to the first and last change of the answer's text "
        "(MutationObserver, `performance.now()`); each page run reloads `/`, so there is no history. "
        f"N={r['runs']} each after {r['warmup']} warm-up runs. Produced by `bench/bench_web.py`.",
        "",
        f"Machine: {r['machine']}. Its cores are shared with other work; load average "
        f"{lb[0]:.1f} / {lb[1]:.1f} / {lb[2]:.1f} (1/5/15 min) before, {la[0]:.1f} / {la[1]:.1f} / "
        f"{la[2]:.1f} after. The client, the browser, the stub and the server all run on these cores.",
        "",
        "| ms | API p50 | page p50 | page − API | API p95 | page p95 | page − API |",
        "|---|---|---|---|---|---|---|",
        row("first token", "first_ms", "first_ms"),
        row("first token, next frame", None, "first_frame_ms"),
        row("last token", "last_ms", "last_ms"),
        row("answer complete", "done_ms", "done_ms"),
        "",
        "`answer complete`: the end of the SSE stream for the API; `aria-busy` removed from the answer "
        "(citations rendered) for the page. `next frame`: the `requestAnimationFrame` after the first text "
        "was set, about when it is painted.",
        "",
        f"Page overhead at the first token: {r['overhead_first_ms']['p50']:+.0f} ms p50, "
        f"{r['overhead_first_ms']['p95']:+.0f} ms p95; at the last token: "
        f"{r['overhead_last_ms']['p50']:+.0f} ms p50, {r['overhead_last_ms']['p95']:+.0f} ms p95 "
        "(differences between the percentiles of the two separate series of runs).",
        "",
        "Command:",
        "",
        f"    {cmd}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
