# The two commands of the README:
#   make study   set up (virtual environment + package) and run the whole study on the default data
#   make test    run the quick test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup study test test-slow lint data-folder kuairand tune bench clean

$(BIN)/dvc: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	# torch is pinned to 2.13.0 in pyproject.toml: the CPU wheel, not a multi-GB CUDA build.
	$(BIN)/pip install -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(BIN)/dvc

# data/ is the user's raw-data folder, tracked by data.dvc; on a fresh clone it is empty.
data-folder: setup
	$(BIN)/python -m dmtl.datafolder

study: setup data-folder
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc metrics show

# Run the study on a folder of official KuaiRand files: make kuairand KUAIRAND=path/to/KuaiRand-Pure/data
kuairand: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m dmtl.realdata kuairand "$(KUAIRAND)"

# The same tuning grid for every student (frozen stage; results committed under tuning/).
tune: setup data-folder
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m dmtl.tuning run

# Benchmarks (on demand): figures into benchmarks/results.json, rendered into benchmarks/report.html.
bench: setup
	$(BIN)/python benchmarks/run_all.py --threads auto
	$(BIN)/python -m dmtl.notebook notebooks/benchmarks.ipynb benchmarks/report
	$(BIN)/python -m dmtl.readme

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf artifacts reports metrics plots sweeps
