# The two commands of README.md: `make demo` and `make test`.
# Each creates .venv on first use and installs what it needs.
# Python 3.11, 3.12 or 3.13: the newest found (.ci/pythons), unless PYTHON=... is given.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(or $(shell .ci/pythons | awk '$$2 != "-" { print $$2; exit }'),python3)
endif
MINOR  := -c 'import sys; print(*sys.version_info[:2], sep=".")'
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint fuzz bench interop clean

$(BIN)/.sac-installed: setup.cfg setup.py pyproject.toml
	@$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 13), f"sac needs Python 3.11, 3.12 or 3.13; $(PYTHON) is {sys.version.split()[0]} (make PYTHON=/path/to/python3.13)"'
	@echo "sac: $(VENV) on Python $$($(PYTHON) $(MINOR)): $(PYTHON)"
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python $(MINOR))" != "$$($(PYTHON) $(MINOR))" ]; then \
		echo "sac: $(VENV) is on another Python: made anew"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

demo: $(BIN)/.sac-installed
	$(BIN)/python -m sac.demo

test: $(BIN)/.sac-installed
	$(BIN)/ruff check sac tests benchmarks twisted setup.py
	$(BIN)/ruff format --check sac tests benchmarks twisted setup.py
	$(BIN)/pytest

lint: $(BIN)/.sac-installed
	$(BIN)/ruff check sac tests benchmarks twisted setup.py
	$(BIN)/ruff format --check sac tests benchmarks twisted setup.py

# 100k+ examples per property: the long Hypothesis run (not part of `make test`).
fuzz: $(BIN)/.sac-installed
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/dlms/test_fuzz.py tests/dlms/test_properties.py -q

bench: $(BIN)/.sac-installed
	$(BIN)/python benchmarks/bench_codec.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_push.py
	$(BIN)/python benchmarks/bench_web.py
	$(BIN)/python benchmarks/bench_soap.py

clean:
	rm -rf $(VENV) build *.egg-info
