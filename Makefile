# Two commands on a fresh machine (README): `make demo` and `make test`.
# Both create .venv and install ProSper with its extras, including the pip-installable MPICH,
# so no system MPI is needed.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
EXTRAS ?= mpich,plot,data,test

.PHONY: demo test lint bench docs venv clean

$(BIN)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/mpiexec -n 2 $(BIN)/prosper fit examples/bsc_bars.toml --out bsc_bars.h5 --overwrite
	$(BIN)/prosper info bsc_bars.h5
	$(BIN)/prosper plot bsc_bars.h5 -o bsc_bars.png

test: venv
	$(BIN)/python -m pytest -q --durations=15

lint: venv
	$(BIN)/ruff check prosper tests examples benchmarks
	$(BIN)/ruff format --check prosper tests examples benchmarks

bench: venv
	$(BIN)/python benchmarks/bench_bsc.py

# The documentation site, offline, warnings as errors: docs/_build/html/index.html
$(BIN)/.docs-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),docs]"
	touch $@

docs: $(BIN)/.docs-installed
	$(BIN)/python -m sphinx -W --keep-going -q -b html -d docs/_build/doctrees docs docs/_build/html
	@echo "docs/_build/html/index.html"

clean:
	rm -rf $(VENV) build *.egg-info bsc_bars.h5 bsc_bars.png .pytest_cache
	rm -rf docs/_build docs/_gallery_src docs/auto_examples docs/api/generated
