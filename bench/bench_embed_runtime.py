"""e5-small on the CPU: torch, ONNX Runtime (float32, int8) and OpenVINO (float32, bfloat16), in one run.

Speed: the same ~230-token chunks (passages of the eval sets cut to exactly
``--tokens`` tokens) are embedded by each runtime in interleaved rounds (torch,
onnx, onnx-int8, ..., torch, ...), so a changing machine load hits all of them
alike; the figure is chunks per CPU-second of this process (all its threads),
with wall-clock chunks/s and the load average beside it. The cosine of each
runtime's vectors against torch's is reported for the same chunks.

Besides the runtimes ``rag`` offers (``onnx-int8-pc``: every MatMul in int8 with one
weight scale per output column), an int8 probe is built here from the same ONNX file
(``--probes``): ``onnx-int8-ffn`` (only the feed-forward MatMuls in int8, the
attention projections float32).

Quality: nDCG@10 (and Recall@100) of dense-only retrieval, brute-force cosine,
on xquad_zh and xquad_en (all 240 passages, all queries) and seeded subsets of
cmrc2018_dev_zh, covidqa_chunks_en and rgb_int_zh (``--subset-docs`` passages:
sampled queries, their relevant passages, random distractors; as in
bench/bench_embed.py), against ONNX Runtime float32 (the same vectors as torch to
~1e-6, so torch itself is not re-run there).

The bound: FLOPs per chunk of e5-small (2 per multiply-add of the weight
matrices and the attention products) against the machine's fp32 peak (cores ×
2 FMA units × 8 lanes × 2 FLOP × clock from /proc/cpuinfo).

Run: ``python bench/bench_embed_runtime.py [--rounds 3] [--chunks 24] [--subset-docs 300]
[--out bench/results/embed_runtime.md]``. The ONNX files are exported into the
model cache (``RAG_MODEL_DIR``) on first use; OpenVINO runtimes are skipped when
``openvino`` is not installed. Writes the Markdown report and a JSON copy of the
figures next to it. Skips (exit 0) when ../shared/eval is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_embed import subsample  # noqa: E402

from eval.beir import load_beir  # noqa: E402
from eval.metrics import evaluate_run  # noqa: E402
from rag.embed.base import cpu_count  # noqa: E402
from rag.embed.e5 import E5Embedder  # noqa: E402
from rag.embed.models import model_cache_dir  # noqa: E402

EVAL_DIR = ROOT.parent / "shared" / "eval"
RUNTIMES = ("torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "onnx-int8-pc")
PROBES = ("onnx-int8-ffn",)
SETS = ("xquad_zh", "xquad_en", "cmrc2018_dev_zh", "covidqa_chunks_en", "rgb_int_zh")
#: quality is measured against this runtime (float32; the same vectors as torch to ~1e-6)
REFERENCE = "onnx"
# e5-small (multilingual-e5-small): BERT-small shape
LAYERS, HIDDEN, INTER = 12, 384, 1536


def flops_per_chunk(
    tokens: int, layers: int = LAYERS, hidden: int = HIDDEN, inter: int = INTER
) -> dict[str, float]:
    """FLOPs (2 per multiply-add) of one forward pass over ``tokens`` tokens, by part."""
    proj = 2 * tokens * 4 * hidden * hidden  # Q, K, V, output projection
    ffn = 2 * tokens * 2 * hidden * inter  # the two feed-forward matrices
    attn = 2 * 2 * tokens * tokens * hidden  # QK^T and attention x V over all heads
    return {
        "projections": layers * proj,
        "feed_forward": layers * ffn,
        "attention": layers * attn,
        "total": layers * (proj + ffn + attn),
    }


def cpu_peak() -> dict[str, Any]:
    """fp32 peak of the cores this process may use: cores × 2 FMA units × 8 lanes × 2 FLOP × clock."""
    mhz: list[float] = []
    model, flags = "", set[str]()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "cpu MHz":
            mhz.append(float(value))
        elif key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    cores = cpu_count()
    clock = max(mhz) * 1e6 if mhz else float("nan")
    per_cycle = 2 * 8 * 2  # 2 FMA units, 8 fp32 lanes (256-bit), 2 FLOP per FMA
    return {
        "cpu": model,
        "cores": cores,
        "clock_ghz": clock / 1e9,
        "fp32_flop_per_cycle_per_core": per_cycle,
        "peak_gflops": cores * per_cycle * clock / 1e9,
        "avx512f": "avx512f" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
    }


def make(runtime: str, cache: Path, probe_dir: Path) -> E5Embedder:
    """The embedder of a ``rag`` runtime, or of a probe: ONNX Runtime on an int8 file built here."""
    if runtime not in PROBES:
        return E5Embedder(cache_dir=cache, device="cpu", runtime=runtime)
    from rag.embed.onnx import OnnxEncoder, quantize_encoder

    emb = E5Embedder(cache_dir=cache, device="cpu", runtime="onnx")
    emb.embed_passages(["warm-up"])  # exports the float32 file when missing
    fp32 = cache / "e5-small-onnx" / "model.onnx"
    path = probe_dir / f"{runtime}.onnx"
    started = time.perf_counter()
    quantize_encoder(fp32, path, variant=runtime.removeprefix("onnx-"))
    emb.load_stats["quantize_s"] = time.perf_counter() - started
    emb._onnx = OnnxEncoder(path)
    emb.numpy_queries = False
    emb.name = f"e5-small+{runtime}"
    return emb


def chunks_of(emb: E5Embedder, n: int, tokens: int) -> list[str]:
    """``n`` passages of the eval sets long enough to fill ``tokens`` tokens (truncated there when embedded)."""
    out: list[str] = []
    for name in ("cmrc2018_dev_zh", "xquad_zh", "xquad_en"):
        ds = load_beir(EVAL_DIR / name)
        for doc_id in sorted(ds.corpus):
            text = ds.document_text(doc_id)
            if len(emb.tokenize(["passage: " + text])[0]) >= tokens:
                out.append(text)
                if len(out) == n:
                    return out
    return out


def speed(embs: dict[str, E5Embedder], texts: list[str], rounds: int, tokens: int) -> dict[str, Any]:
    for emb in embs.values():
        emb.max_length = tokens
        emb.embed_passages(texts[:2])  # warm-up: sessions, thread pools, lazy imports
    cpu = dict.fromkeys(embs, 0.0)
    wall = dict.fromkeys(embs, 0.0)
    vecs: dict[str, np.ndarray] = {}
    load = [os.getloadavg()[0]]
    for _ in range(rounds):
        for name, emb in embs.items():
            c0, w0 = time.process_time(), time.perf_counter()
            vecs[name] = emb.embed_passages(texts)
            cpu[name] += time.process_time() - c0
            wall[name] += time.perf_counter() - w0
        load.append(os.getloadavg()[0])
    for emb in embs.values():
        emb.max_length = 512
    n = rounds * len(texts)
    out: dict[str, Any] = {"chunks": len(texts), "rounds": rounds, "tokens": tokens, "load_avg": load}
    for name in embs:
        ref = vecs["torch"] if "torch" in vecs else vecs[next(iter(vecs))]
        cos = np.sum(vecs[name] * ref, axis=1)
        out[name] = {
            "chunks_per_cpu_s": n / cpu[name],
            "chunks_per_wall_s": n / wall[name],
            "cpu_s": cpu[name],
            "wall_s": wall[name],
            "cosine_vs_torch_mean": float(cos.mean()),
            "cosine_vs_torch_min": float(cos.min()),
        }
    return out


def quality(embs: dict[str, E5Embedder], name: str, cmrc_docs: int, seed: int) -> dict[str, Any]:
    ds = load_beir(EVAL_DIR / name)
    if not name.startswith("xquad"):
        doc_ids, qids = subsample(ds, cmrc_docs, seed)
    else:
        doc_ids = sorted(ds.corpus)
        qids = sorted(q for q in ds.qrels if q in ds.queries)
    docs = [ds.document_text(d) for d in doc_ids]
    queries = [ds.queries[q] for q in qids]
    out: dict[str, Any] = {"docs": len(docs), "queries": len(queries)}
    for runtime, emb in embs.items():
        c0 = time.process_time()
        d = emb.embed_passages(docs)
        doc_cpu = time.process_time() - c0
        q = emb.embed_queries(queries)
        scores = q @ d.T
        top = np.argsort(-scores, axis=1)[:, :100]
        run = {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(qids)}
        metrics = evaluate_run(run, {x: ds.qrels[x] for x in qids}, ks=(10, 100))
        out[runtime] = {
            "ndcg@10": metrics["ndcg@10"],
            "recall@100": metrics["recall@100"],
            "passages_per_cpu_s": len(docs) / doc_cpu,
        }
        print(f"  {name} {runtime}: nDCG@10 {metrics['ndcg@10']:.4f}", flush=True)
    return out


def report(res: dict[str, Any]) -> str:
    sp, peak, fl = res["speed"], res["peak"], res["flops"]
    runtimes = res["runtimes"]
    quality_rts = res["quality_runtimes"]
    lines = [
        "# e5-small on the CPU: torch, ONNX Runtime and OpenVINO",
        "",
        f"Machine: {peak['cpu']}, {peak['cores']} cores at {peak['clock_ghz']:.2f} GHz "
        f"(avx512f {peak['avx512f']}, avx512_vnni {peak['avx512_vnni']}, avx512_bf16 {peak['avx512_bf16']}), "
        f"shared: load average {min(sp['load_avg']):.1f}–{max(sp['load_avg']):.1f} during the speed rounds. "
        + ", ".join(f"{k} {v}" for k, v in res["versions"].items())
        + ".",
        "",
        f"Command: `{res['command']}`",
        "",
        f"## Speed ({sp['chunks']} chunks of {sp['tokens']} tokens, {sp['rounds']} interleaved rounds)",
        "",
        "| runtime | chunks / CPU-s | × torch | × onnx | chunks / wall-s | cosine vs torch (mean / min) |",
        "|---|---|---|---|---|---|",
    ]
    base = sp["torch"]["chunks_per_cpu_s"]
    onnx = sp.get(REFERENCE, sp["torch"])["chunks_per_cpu_s"]
    for rt in runtimes:
        s = sp[rt]
        lines.append(
            f"| {rt} | {s['chunks_per_cpu_s']:.2f} | {s['chunks_per_cpu_s'] / base:.2f} | "
            f"{s['chunks_per_cpu_s'] / onnx:.2f} | {s['chunks_per_wall_s']:.2f} | "
            f"{s['cosine_vs_torch_mean']:.5f} / {s['cosine_vs_torch_min']:.5f} |"
        )
    gflop = fl["total"] / 1e9
    bound = peak["peak_gflops"] / gflop
    per_core = peak["peak_gflops"] / peak["cores"] / gflop
    lines += [
        "",
        "## The bound",
        "",
        f"FLOPs per {sp['tokens']}-token chunk (12 layers, hidden 384, intermediate 1536; 2 FLOP per "
        f"multiply-add): projections {fl['projections'] / 1e9:.2f} G + feed-forward "
        f"{fl['feed_forward'] / 1e9:.2f} G + attention {fl['attention'] / 1e9:.2f} G = **{gflop:.2f} GFLOP** "
        "(layer norms, GELU, softmax and the embedding lookup add well under 1 %).",
        "",
        f"fp32 peak: {peak['cores']} cores × 2 FMA units × 8 lanes × 2 FLOP × {peak['clock_ghz']:.2f} GHz = "
        f"**{peak['peak_gflops']:.0f} GFLOP/s**, so at most **{bound:.1f} chunks/s** on the whole machine, "
        f"{per_core:.1f} chunks per CPU-second.",
        "",
        "| runtime | chunks / CPU-s | achieved GFLOP per CPU-s | fraction of the per-core fp32 peak |",
        "|---|---|---|---|",
    ]
    for rt in runtimes:
        c = sp[rt]["chunks_per_cpu_s"]
        lines.append(f"| {rt} | {c:.2f} | {c * gflop:.1f} | {c / per_core:.0%} |")
    lines += [
        "",
        "## Quality (dense-only nDCG@10, brute-force cosine)",
        "",
        f"Drops against `{REFERENCE}` (float32, the same vectors as torch to ~1e-6).",
        "",
        "| set | passages | queries | " + " | ".join(quality_rts) + " | largest drop (positive = worse) |",
        "|---|---|---|" + "---|" * len(quality_rts) + "---|",
    ]
    for name, q in res["quality"].items():
        cells = [f"{q[rt]['ndcg@10']:.4f}" for rt in quality_rts]
        drop = max(q[REFERENCE]["ndcg@10"] - q[rt]["ndcg@10"] for rt in quality_rts)
        lines.append(f"| {name} | {q['docs']} | {q['queries']} | " + " | ".join(cells) + f" | {drop:+.4f} |")
    lines += ["", "Drop of each runtime against the reference, per set (positive = worse):", ""]
    lines.append("| set | " + " | ".join(quality_rts) + " |")
    lines.append("|---|" + "---|" * len(quality_rts))
    for name, q in res["quality"].items():
        ref = q[REFERENCE]["ndcg@10"]
        lines.append(
            f"| {name} | " + " | ".join(f"{ref - q[rt]['ndcg@10']:+.4f}" for rt in quality_rts) + " |"
        )
    lines += [
        "",
        "Passages per CPU-second while embedding those corpora (real lengths, up to 512 tokens):",
        "",
    ]
    lines.append("| set | " + " | ".join(quality_rts) + " |")
    lines.append("|---|" + "---|" * len(quality_rts))
    for name, q in res["quality"].items():
        lines.append(
            f"| {name} | " + " | ".join(f"{q[rt]['passages_per_cpu_s']:.2f}" for rt in quality_rts) + " |"
        )
    lines += ["", "## Decision", "", res.get("decision", ""), ""]
    return "\n".join(lines)


def decide(res: dict[str, Any], tolerance: float = 0.005) -> str:
    """The ``rag`` runtimes within ``tolerance`` nDCG@10 of float32 on every set and faster than it,
    fastest first (the first one that can run on a CPU is its default)."""
    sp = res["speed"]
    base = sp[REFERENCE]["chunks_per_cpu_s"]
    ok = []
    for rt in res["quality_runtimes"]:
        if rt == REFERENCE or rt in PROBES:
            continue
        drops = [q[REFERENCE]["ndcg@10"] - q[rt]["ndcg@10"] for q in res["quality"].values()]
        ratio = sp[rt]["chunks_per_cpu_s"] / base
        if max(drops) <= tolerance and ratio > 1.0:
            ok.append((ratio, max(drops), rt))
    if not ok:
        return (
            f"No runtime is both faster than `{REFERENCE}` and within {tolerance} nDCG@10 of it on every set: "
            f"`{REFERENCE}` stays the CPU default."
        )
    torch_cps = sp["torch"]["chunks_per_cpu_s"]
    parts = [
        f"`{rt}` ({ratio:.2f}× `{REFERENCE}`, {sp[rt]['chunks_per_cpu_s'] / torch_cps:.2f}× torch per CPU-second; "
        f"largest nDCG@10 drop {drop:+.4f})"
        for ratio, drop, rt in sorted(ok, reverse=True)
    ]
    return (
        f"Within {tolerance} nDCG@10 of float32 on every set measured and faster, fastest first: "
        + "; ".join(parts)
        + ". The CPU default is the first of these that can run there (`RAG_EMBEDDING__RUNTIME=auto`)."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--probes", default=",".join(PROBES), help="int8 probes built here ('' for none)")
    ap.add_argument(
        "--quality-runtimes",
        default="onnx,onnx-int8,openvino-bf16,onnx-int8-ffn,onnx-int8-pc",
        help=f"runtimes whose nDCG@10 is measured (the first must be {REFERENCE})",
    )
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--chunks", type=int, default=24)
    ap.add_argument("--tokens", type=int, default=230)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--subset-docs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embed_runtime.md")
    ap.add_argument(
        "--report-only", action="store_true", help="rewrite the report from the JSON next to --out"
    )
    args = ap.parse_args()
    if args.report_only:
        finish(json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8")), args.out)
        return
    if not EVAL_DIR.is_dir():
        print(f"skipped: {EVAL_DIR} not found")
        return
    import onnxruntime
    import torch

    from rag.embed.openvino import openvino_available

    cache = model_cache_dir()
    split = lambda text: [r.strip() for r in text.split(",") if r.strip()]  # noqa: E731
    runtimes = split(args.runtimes)
    if not openvino_available():
        print("openvino is not installed: its runtimes are skipped (pip install 'rag-notes[openvino]')")
        runtimes = [r for r in runtimes if not r.startswith("openvino")]
    if runtimes[0] != "torch":
        raise SystemExit("the first runtime must be torch (the speed reference)")
    runtimes += split(args.probes)
    quality_rts = [r for r in split(args.quality_runtimes) if r in runtimes]
    if not quality_rts or quality_rts[0] != REFERENCE:
        raise SystemExit(f"the first quality runtime must be {REFERENCE}")
    versions = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    if openvino_available():
        import openvino

        versions["openvino"] = openvino.__version__.split("-")[0]
    peak = cpu_peak()
    res: dict[str, Any] = {
        "command": " ".join(["python bench/bench_embed_runtime.py", *sys.argv[1:]]),
        "runtimes": runtimes,
        "quality_runtimes": quality_rts,
        "python": platform.python_version(),
        "versions": versions,
        "peak": peak,
        "flops": flops_per_chunk(args.tokens),
        "model_cache": str(cache),
    }
    out_json = args.out.with_suffix(".json")

    def save() -> None:
        out_json.write_text(json.dumps(res, indent=2), encoding="utf-8")

    embs: dict[str, E5Embedder] = {}
    with tempfile.TemporaryDirectory(prefix="embed-probes-") as probe_dir:
        for rt in runtimes:
            started = time.perf_counter()
            embs[rt] = make(rt, cache, Path(probe_dir))
            embs[rt].embed_passages(["warm-up"])  # builds the session (exports on first use)
            res.setdefault("load", {})[rt] = {
                **embs[rt].load_stats,
                "first_use_s": time.perf_counter() - started,
            }
            print(f"loaded {rt}: {res['load'][rt]}", flush=True)
    texts = chunks_of(embs["torch"], args.chunks, args.tokens)
    res["speed"] = speed(embs, texts, args.rounds, args.tokens)
    print(json.dumps(res["speed"], indent=1), flush=True)
    save()
    res["quality"] = {}
    for name in split(args.sets):
        res["quality"][name] = quality(
            {rt: embs[rt] for rt in quality_rts}, name, args.subset_docs, args.seed
        )
        save()
    finish(res, args.out)


def finish(res: dict[str, Any], out: Path) -> None:
    """Decide, then write the figures (JSON) and the report (Markdown)."""
    res["decision"] = decide(res)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    out.write_text(report(res), encoding="utf-8")
    print(res["decision"])


if __name__ == "__main__":
    main()
