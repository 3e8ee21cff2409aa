# Set-up and entry points. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[workflow,test]'
	touch $@

demo: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup
	bash .ci/slurm/install.sh || echo "SLURM packages not installed: the SLURM tests will skip"
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q

lint: setup
	$(BIN)/snakemake --lint

clean:
	rm -rf results logs .snakemake
