# flux-pipeline: every target creates the virtualenv it needs first, from uv.lock.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
TYPECHECK_NICE ?= 0
# pytest in PYTEST_WORKERS parallel processes (pytest-xdist), each handed its next test when it
# is nearly done (--maxschedchunk 1), the slowest first (tests/conftest.py orders them): those
# mostly wait on dagster-daemon's fixed 30 s backfill loop, so 4 workers keep 2 cores busy.
# `make test PYTEST_WORKERS=0` runs serially, in pytest's own order.
PYTEST_WORKERS ?= 4
PYTEST_XDIST := -n $(PYTEST_WORKERS) $(if $(filter 0,$(PYTEST_WORKERS)),,--dist load --maxschedchunk 1)
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# Bytecode: the venv's is compiled once at install (uv sync --compile-bytecode), the project's
# and pytest's rewritten tests are written on first import. Where the environment sets
# PYTHONDONTWRITEBYTECODE, every process would otherwise compile every module it imports from
# source: about 3 s of CPU for each Dagster process (CLI, daemon, code server, run worker).
unexport PYTHONDONTWRITEBYTECODE

# uv, pinned, bootstrapped from PyPI into the venv itself: nothing is installed system-wide
# and a uv found on the PATH is never used. Bump it here and run `make lock`.
UV_VERSION := 0.13.9
UV         := $(BIN)/uv
UV_STAMP   := $(VENV)/.uv-$(UV_VERSION)
# The venv is the project environment; never a Python that uv downloads itself.
UV_ENV     := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never
# Installs exactly the lock's versions (--frozen: uv.lock as committed, never re-resolved) and
# the project itself editable. --inexact: a sync never uninstalls what another target added,
# so `make demo` after `make test` keeps the dev extra instead of removing it (and pip, uv).
UV_SYNC    := $(UV_ENV) $(UV) sync --frozen --inexact --compile-bytecode --python $(PY)
# One stamp per set of extras: `make demo` installs the runtime only, `make test` adds `dev`.
RUNTIME_STAMP := $(VENV)/.synced-runtime
DEV_STAMP     := $(VENV)/.synced-dev
UV_LOCK_ARGS  ?=

.PHONY: install demo test lint lock lock-check typecheck pytest bench ui emulator clean

# pip puts uv into the venv: python3's own pip aimed at the venv (`pip --python`, pip >= 22.3),
# else the venv's pip, copied in by ensurepip if need be. The venv starts without pip because
# copying pip into it (`python3 -m venv`'s default) alone takes 3-5 s here.
PIP_UV := install --quiet --disable-pip-version-check --no-deps --only-binary :all: uv==$(UV_VERSION)
$(UV_STAMP):
	test -x $(PY) || python3 -m venv --without-pip $(VENV)
	python3 -m pip --python $(PY) $(PIP_UV) 2>/dev/null || \
	  { $(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip --default-pip >/dev/null; \
	    $(PY) -m pip $(PIP_UV); }
	rm -f $(VENV)/.uv-* && touch $@

$(RUNTIME_STAMP): uv.lock pyproject.toml $(UV_STAMP)
	$(UV_SYNC)
	touch $@

$(DEV_STAMP): uv.lock pyproject.toml $(UV_STAMP)
	$(UV_SYNC) --extra dev
	touch $@ $(RUNTIME_STAMP)

install: $(DEV_STAMP)

## Re-resolve uv.lock from pyproject.toml (keeps current pins where they still fit;
## `make lock UV_LOCK_ARGS=--upgrade` or `UV_LOCK_ARGS='--upgrade-package httpx'` moves them).
lock: $(UV_STAMP)
	$(UV_ENV) $(UV) lock $(UV_LOCK_ARGS)

## Fails when uv.lock no longer matches pyproject.toml (run `make lock` and commit uv.lock).
lock-check: $(UV_STAMP)
	$(UV_ENV) $(UV) lock --check || \
	  { echo 'uv.lock does not match pyproject.toml: run `make lock` and commit uv.lock' >&2; exit 1; }

## One machine's Dagster instance (queue and `segmind` pool limits); an existing file is kept.
$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	cp deploy/local/dagster.yaml $@

## Materialize one partition of the bundled sample on the embedded emulator.
demo: $(RUNTIME_STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/flux-pipeline demo

## Lint, then type-check and run the whole test suite side by side: mypy (one core for about
## 25 s from a cold cache) fills the cores the suite leaves idle while its daemon tests wait; it
## runs at a lower priority (TYPECHECK_NICE) so that it never delays the suite's start-up.
test: lint
	$(MAKE) --no-print-directory -j2 typecheck pytest TYPECHECK_NICE=10

lint: lock-check $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# assets/ and resources/ install as flux_pipeline.assets / .resources; mypy sees
# that layout through a throw-away copy of the package tree. Its cache stays in .mypy_cache
# (the copy's own modules are checked again, the libraries' analyses are reused).
typecheck: $(DEV_STAMP)
	@dir=$$(mktemp -d build/typecheck.XXXXXX 2>/dev/null || (mkdir -p build && mktemp -d build/typecheck.XXXXXX)) && \
	cp -r flux_pipeline $$dir/flux_pipeline && \
	cp -r assets $$dir/flux_pipeline/assets && \
	cp -r resources $$dir/flux_pipeline/resources && \
	cd $$dir && nice -n $(TYPECHECK_NICE) $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml --cache-dir $(CURDIR)/.mypy_cache -p flux_pipeline; \
	status=$$?; rm -rf $(CURDIR)/$$dir; exit $$status

pytest: $(DEV_STAMP)
	$(BIN)/pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

bench: $(DEV_STAMP)
	$(PY) -m bench

ui: $(RUNTIME_STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml

emulator: $(RUNTIME_STAMP)
	$(BIN)/flux-pipeline emulator --port 8765

clean:
	rm -rf $(VENV) build .dagster_home .pytest_cache .mypy_cache .ruff_cache data
