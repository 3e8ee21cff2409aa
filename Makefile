# Set-up and entry points. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: setup demo test test-fast test-gpu lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[workflow,test]'
	touch $@

demo: setup
	$(BIN)/snakemake --cores $(CORES)

# Everything CI runs: unit tests, end-to-end workflow runs, the report in headless
# Chromium and the local SLURM cluster (both installed here with apt-get; needs root).
# A failed install fails.
test: setup
	bash .ci/slurm/install.sh
	bash .ci/browser/install.sh
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -m "not gpu"

# The quick loop for development: unit tests only (about a minute on 2 cores).
test-fast: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -m "not workflow and not slurm and not gpu and not browser"

# Tests that need a CUDA GPU (not part of CI, which has none).
test-gpu: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -m gpu

lint: setup
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check .

clean:
	rm -rf results logs .snakemake
