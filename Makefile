# Fleetyard: `make demo` and `make test` work on a fresh machine; each bootstraps what it needs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Touched after a successful install: re-install only when pyproject.toml is newer than it.
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv postgres chromium bubblewrap rank-python lint typecheck test test-long demo bench-quick clean

help:
	@echo "make demo         start a local fleet, run the example jobs, keep serving until Ctrl-C"
	@echo "make test         ruff, mypy and pytest (installs PostgreSQL and Chromium through apt when missing)"
	@echo "make test-long    the long scenarios (marker long) in full: property tests with 10x the examples"
	@echo "make lint         ruff check and ruff format --check"
	@echo "make bench-quick  the benchmarks' short runs"
	@echo "make clean        remove the venv, caches and the local fleet's data"

$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      echo "python3 -m venv failed: installing python3-venv"; \
	      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv && \
	      rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
	    else \
	      echo "python3 -m venv failed: install python3-venv (Debian/Ubuntu) and try again" >&2; exit 1; \
	    fi; }; \
	fi
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# The integration tests start throwaway PostgreSQL clusters with initdb/pg_ctl.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "initdb not found: installing PostgreSQL through apt-get"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; \
	else \
	  echo "warning: PostgreSQL (initdb) not found and not root: the PostgreSQL tests will be skipped;" \
	       "install it with: sudo apt-get install postgresql" >&2; \
	fi

# The dashboard's browser tests (tests/browser) drive Debian's Chromium with Playwright: never a
# browser that Playwright downloads.
chromium:
	@if command -v chromium >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "chromium not found: installing it through apt-get"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	else \
	  echo "warning: chromium not found and not root: the browser tests will be skipped;" \
	       "install it with: sudo apt-get install --no-install-recommends chromium" >&2; \
	fi

# Agents run ranks under bubblewrap where it runs (fleetyard agent --sandbox auto, as root); the
# security tests try both that sandbox and the plain uid one.
bubblewrap:
	@if command -v bwrap >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "bwrap not found: installing bubblewrap through apt-get"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap; \
	else \
	  echo "warning: bwrap not found and not root: agents fall back to the uid sandbox (as root);" \
	       "install it with: sudo apt-get install bubblewrap" >&2; \
	fi

# In-process kinds (run, validate, eval) run in a process of the board slot's own uid, which must
# read the agent's Python: a directory above it that others cannot pass (pyenv's /root, 0700)
# gets its search bit, and nothing more (no listing, no reading).
rank-python: venv
	@if [ "$$(id -u)" = 0 ]; then \
	  for d in $$($(BIN)/python -c 'import os, sys, pathlib; print(*[p for p in pathlib.Path(os.path.realpath(sys.base_prefix)).parents if not os.stat(p).st_mode & 1])'); do \
	    echo "rank uids cannot pass $$d: chmod o+x $$d"; chmod o+x "$$d"; \
	  done; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# Three workers on two cores: most tests wait on real processes, so the suite takes about half
# the time it takes in one. worksteal: an idle worker takes tests queued on a busy one (the
# slowest tests take 20-40 s; a plain split left one worker finishing alone for minutes).
# Byte-compiled first: where PYTHONDONTWRITEBYTECODE is set (as on these machines), every server,
# agent, worker and CLI process a test starts would compile the project's sources again (0.35 s each).
test: venv postgres chromium bubblewrap rank-python lint typecheck
	$(BIN)/python -m compileall -q src > /dev/null
	$(BIN)/pytest -n 3 --dist worksteal tests/

# `make test` runs the long scenarios bounded (the suite's budget: 12 minutes on 2 cores).
test-long: venv postgres
	$(BIN)/python -m compileall -q src > /dev/null
	FLEETYARD_TEST_LONG=1 $(BIN)/pytest -n 3 --dist worksteal -m "long or one_store" tests/

demo: venv
	$(BIN)/fleetyard up --demo

bench-quick: venv
	$(BIN)/python bench/dispatch.py --quick
	$(BIN)/python bench/heartbeats.py --quick
	$(BIN)/python bench/compare.py --quick
	$(BIN)/python bench/overhead.py --quick
	$(BIN)/python bench/warm.py --quick
	$(BIN)/python bench/scheduler.py --quick --no-postgres
	$(BIN)/python bench/sched_trace.py --quick
	$(BIN)/python bench/fleet_sim.py --quick
	$(BIN)/python bench/onboard.py --quick
	$(BIN)/python bench/rollout.py --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .fleetyard
