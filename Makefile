# flux-pipeline: every target creates the virtualenv it needs first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install demo test lint typecheck pytest bench ui emulator clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

## One machine's Dagster instance (queue and `segmind` pool limits); an existing file is kept.
$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	cp deploy/local/dagster.yaml $@

## Materialize one partition of the bundled sample on the embedded emulator.
demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/flux-pipeline demo

## Lint, type-check and run the whole test suite.
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# assets/ and resources/ install as flux_pipeline.assets / .resources; mypy sees
# that layout through a throw-away copy of the package tree.
typecheck: $(STAMP)
	@dir=$$(mktemp -d build/typecheck.XXXXXX 2>/dev/null || (mkdir -p build && mktemp -d build/typecheck.XXXXXX)) && \
	cp -r flux_pipeline $$dir/flux_pipeline && \
	cp -r assets $$dir/flux_pipeline/assets && \
	cp -r resources $$dir/flux_pipeline/resources && \
	cd $$dir && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p flux_pipeline; \
	status=$$?; rm -rf $(CURDIR)/$$dir; exit $$status

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench

ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml

emulator: $(STAMP)
	$(BIN)/flux-pipeline emulator --port 8765

clean:
	rm -rf $(VENV) build .dagster_home .pytest_cache .mypy_cache .ruff_cache data
