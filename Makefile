# The two commands of the README:
#   make study   set up (virtual environment + package) and run the whole study on the default data
#   make test    run the quick test suite (what CI runs)
# Both install from requirements.lock (exact versions of every package); make lock refreshes it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock

.PHONY: setup study full test test-slow lint lock data-folder kuairand tune bench clean

$(BIN)/dvc: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	# One step: the package and its extras at the locked versions. torch==2.13.0 is the CPU wheel, not a
	# multi-GB CUDA build (pinned in pyproject.toml too).
	$(BIN)/pip install -r $(LOCK) -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(BIN)/dvc

# Refresh requirements.lock: resolve pyproject.toml's ranges afresh (newest versions that fit) in a
# throwaway environment and freeze it. Run the tests on the result before committing it.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --upgrade pip >/dev/null
	.lock-venv/bin/pip install -e '.[dev]' >/dev/null
	{ \
	  echo "# Exact versions of every package of the study (and its dev extras), installed by make setup,"; \
	  echo "# make study and make test. Made by make lock on Python $$(.lock-venv/bin/python -c 'import platform; print(platform.python_version(), platform.system(), platform.machine())')."; \
	  echo "# torch is written without its +cpu label so pip takes the CPU wheel where the index offers it."; \
	  .lock-venv/bin/pip freeze --exclude-editable | sed -E 's/^torch==([^+]+)\+cpu$$/torch==\1/'; \
	} > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .lock-venv

# data/ is the user's raw-data folder, tracked by data.dvc; on a fresh clone it is empty.
data-folder: setup
	$(BIN)/python -m dmtl.datafolder

study: setup data-folder
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc metrics show

# The full run: every world of full.yaml, more seeds, wider grids (about an hour on 2 cores) into results/full/
full: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m dmtl.fullrun

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
