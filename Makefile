# The two commands of README.md: `make demo` and `make test`.
# Each creates .venv on first use and installs what it needs.
# Python 3.11, 3.12 or 3.13: the newest found (.ci/pythons), unless PYTHON=... is given.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(or $(shell .ci/pythons | awk '$$2 != "-" { print $$2; exit }'),python3)
endif
MINOR  := -c 'import sys; print(*sys.version_info[:2], sep=".")'
VENV   := .venv
BIN    := $(VENV)/bin
# pytest's arguments for `make test` (default: the whole suite), e.g.
# make test PYTEST_ARGS="tests/dlms/test_vectors.py -q"
PYTEST_ARGS ?=
# a marker expression for `make test` (pyproject.toml's markers), e.g. the quick run:
# make test MARKS="not slow"   (not through PYTEST_ARGS: each run below has its own -m)
MARKS ?=
WITH_MARKS = $(if $(MARKS), and ($(MARKS)))
# pytest-xdist's workers for `make test`: the suite waits on sockets, timers and subprocesses
# more than it computes, so twice the cores (2 here) pay (TEST_WORKERS=0: one process)
TEST_WORKERS ?= 4

.PHONY: demo test lint fuzz bench bench-check interop bare-clone clean

# Two stamps: what the demo runs on (sac and its requirements: the time to the demo's URL on a
# fresh machine), then what the tests, lint and benchmarks add (pytest, playwright, mypy, peers).
$(BIN)/.sac-installed: setup.cfg setup.py pyproject.toml
	@$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 13), f"sac needs Python 3.11, 3.12 or 3.13; $(PYTHON) is {sys.version.split()[0]} (make PYTHON=/path/to/python3.13)"'
	@echo "sac: $(VENV) on Python $$($(PYTHON) $(MINOR)): $(PYTHON)"
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python $(MINOR))" != "$$($(PYTHON) $(MINOR))" ]; then \
		echo "sac: $(VENV) is on another Python: made anew"; rm -rf $(VENV); fi
	@echo "sac: installing sac and what it runs on into $(VENV), once (about 15 s with pip's cache warm, under a minute without)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e .
	touch $@

$(BIN)/.sac-test-installed: $(BIN)/.sac-installed
	@echo "sac: installing what the tests, lint and benchmarks need into $(VENV), once (pytest, playwright, mypy, gurux-dlms...)"
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

demo: $(BIN)/.sac-installed
	$(BIN)/python -m sac.demo

# Two runs of pytest, one command: the tests on TEST_WORKERS workers, then the `serial` ones
# (they restart PostgreSQL or end its connections: pyproject.toml's markers) alone.  A run
# PYTEST_ARGS leaves empty (status 5, "no tests ran") is no failure.
test: lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial$(WITH_MARKS)" $(PYTEST_ARGS) \
	    || [ $$? -eq 5 ]
	$(BIN)/pytest -m "serial$(WITH_MARKS)" $(PYTEST_ARGS) || [ $$? -eq 5 ]

# ruff; sac's layers, an upward import fails (pyproject.toml [tool.importlinter]); its types
# ([tool.mypy]: about a minute with an empty .mypy_cache, seconds after)
lint: $(BIN)/.sac-test-installed
	$(BIN)/ruff check sac tests benchmarks twisted buildtools setup.py
	$(BIN)/ruff format --check sac tests benchmarks twisted buildtools setup.py
	$(BIN)/lint-imports --no-logo pyproject.toml
	$(BIN)/mypy

# 100k+ examples per property: the long Hypothesis run (not part of `make test`).
fuzz: $(BIN)/.sac-test-installed
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/dlms/test_fuzz.py tests/dlms/test_properties.py -q

bench: $(BIN)/.sac-test-installed
	$(BIN)/python benchmarks/bench_codec.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_push.py
	$(BIN)/python benchmarks/bench_cluster.py
	$(BIN)/python benchmarks/bench_web.py
	$(BIN)/python benchmarks/bench_soap.py

# Each benchmark that keeps its results writes them to benchmarks/results/ (JSON: figures,
# ratios to its peer, cores, Python, commit, command line); this compares the newest run of
# each benchmark and options with the one before it and fails naming any ratio that fell by
# more than 20 % (benchmarks/results.py)
bench-check:
	$(or $(wildcard $(BIN)/python),python3) benchmarks/results.py check

# The README's promise on a fresh machine: the committed HEAD, cloned alone into an empty
# temporary directory (no sibling checkout, no SAC_VECTORS), passes the README's `make test` on the
# files below. The clone makes its own .venv: 1-3 minutes (about 30 s with pip's cache warm).
BARE_CLONE_TESTS ?= tests/test_standalone.py tests/dlms/test_vectors.py tests/test_profiles.py \
                    tests/interop/test_gurux_peer_selftest.py
bare-clone:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	if [ -n "$$(git status --porcelain --untracked-files=no)" ]; then \
	    echo "bare-clone: uncommitted changes are not in the clone: it tests the committed HEAD"; fi; \
	echo "bare-clone: cloning $$(git rev-parse --short HEAD) into $$tmp/sac (nothing beside it)"; \
	git clone -q "$(CURDIR)" "$$tmp/sac"; \
	echo "bare-clone: make test there; installing its .venv takes 1-3 minutes"; \
	env -u SAC_VECTORS -u PYTHONPATH -u VIRTUAL_ENV \
	    $(MAKE) --no-print-directory -C "$$tmp/sac" test PYTEST_ARGS="-q $(BARE_CLONE_TESTS)"; \
	echo "bare-clone: a bare clone passes make test"

clean:
	rm -rf $(VENV) build *.egg-info
