# Two commands: `make quickstart` (set up, train a tiny model to grokking on the CPU, analyze it) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# The torch build to install first. The default is the CPU build; on a CUDA machine use e.g. TORCH=torch.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup quickstart test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

quickstart: setup
	$(BIN)/grokscope train configs/quickstart.yaml --out runs --overwrite
	$(BIN)/grokscope analyze runs/quickstart --fourier --neurons --progress --ablate --every 100

# Serial on purpose: on 2 cores, parallel test workers make every threaded torch op crawl.
test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
