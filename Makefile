# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-real lint format bench clean

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

test-real: $(STAMP)
	@$(MAKE) --no-print-directory $(REAL_STAMP)
	$(BIN)/pytest -m real tests/real

demo: $(STAMP)
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
	rm -rf $(VENV) runs .pytest_cache
