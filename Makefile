# Two commands: `make quickstart` (set up, train a tiny model to grokking on the CPU, analyze it) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# The torch requirement installed first: by default torch 2.13.0 in whichever build pip resolves for the platform
# (a CPU-only or a particular CUDA build: install it into .venv first, or pass it as TORCH=...).
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# The oldest supported TransformerLens, in an environment of its own: `make test` runs the model and analysis tests
# there too, so that neither end of transformer-lens>=3.9 breaks unnoticed.
TL_OLDEST ?= transformer-lens==3.9.0
VENV_TL39 ?= .venv-tl39
TL39_TESTS := tests/unit tests/integration/test_analysis_on_grokked_model.py tests/integration/test_dynamics.py \
	tests/integration/test_training.py

.PHONY: setup quickstart test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

$(VENV_TL39)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_TL39)
	$(VENV_TL39)/bin/python -m pip install -q --upgrade pip
	$(VENV_TL39)/bin/python -m pip install -q "$(TORCH)"
	$(VENV_TL39)/bin/python -m pip install -q -e ".[dev]" "$(TL_OLDEST)"
	touch $@

quickstart: setup
	$(BIN)/grokscope train configs/quickstart.yaml --out runs --overwrite
	$(BIN)/grokscope analyze runs/quickstart --fourier --neurons --progress --ablate --every 100

# Serial on purpose: on 2 cores, parallel test workers make every threaded torch op crawl.
test: setup $(VENV_TL39)/.installed
	$(BIN)/python -m pytest -q
	$(VENV_TL39)/bin/python -m pytest -q -p no:cacheprovider $(TL39_TESTS)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) $(VENV_TL39) runs .pytest_cache
