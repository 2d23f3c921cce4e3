# jaxcg: `make demo` and `make test` work on a fresh clone (they create .venv first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-slow lint docs bench clean

# constraints.txt pins the exact versions the tests pass with (pyproject.toml has lower bounds).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[all,test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/jaxcg demo --out demo-output

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

lint: install
	$(VENV)/bin/ruff check jaxcg tests benchmarks

# The API reference is generated from the docstrings; warnings fail the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: install
	$(PY) benchmarks/bench_maps.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache site .cache/mkdocs-jupyter
