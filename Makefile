# The two commands of README.md: `make demo` and `make test`.
# Each creates .venv on first use and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint fuzz bench interop clean

$(BIN)/.sac-installed: setup.cfg setup.py pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "sac needs Python 3.11 (datetime.UTC, StrEnum; spyne 2.14 does not import on 3.12+)"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]' --config-settings editable_mode=compat
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
