# The two front-door commands are `make serve` and `make test`; everything else supports them.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TSTAMP  := $(VENV)/.installed-test
JSDIR   := tests/js

.PHONY: serve test test-fast install install-test js-deps frontend bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml scripts/install-inference.sh | $(BIN)/python
	$(BIN)/pip install -q -e '.[agents]'
	bash scripts/install-inference.sh $(BIN)/pip
	touch $@

install: $(STAMP)

$(TSTAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[agents,test]'
	touch $@

install-test: $(TSTAMP) js-deps

# npm packages for the JavaScript interop tests and the Node reference benchmark (pinned lockfiles).
js-deps:
	cd $(JSDIR) && npm ci --no-audit --no-fund --silent

# The same, only when the lockfile changed (npm ci leaves node_modules/.package-lock.json behind).
$(JSDIR)/node_modules/.package-lock.json: $(JSDIR)/package-lock.json
	cd $(JSDIR) && npm ci --no-audit --no-fund --silent

# The browser app: rebuilt when its sources or lockfile change (esbuild, well under a second).
FRONTEND_SRC := $(shell find frontend/src -type f 2>/dev/null) frontend/index.html frontend/build.mjs
frontend/node_modules/.package-lock.json: frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --silent

frontend/dist/index.html: frontend/node_modules/.package-lock.json $(FRONTEND_SRC)
	cd frontend && npm run build --silent

frontend: frontend/dist/index.html

serve: install frontend
	$(BIN)/tinymorph serve

test: install-test frontend
	$(BIN)/python -m pytest -q -ra

# The quick loop while you work, under 3 minutes: unit tests, layout, protocol, the hub over real
# sockets (PostgreSQL, Redis and node as in `make test`). Leaves out what the markers in
# pyproject.toml name: models (`model`), the browser (`browser`), long runs (`slow`: the real
# editing traces, worker processes). `make test` runs everything.
test-fast: $(TSTAMP) $(JSDIR)/node_modules/.package-lock.json
	$(BIN)/python -m pytest -q -ra -m "not slow and not model and not browser"

bench: install-test
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(JSDIR)/node_modules frontend/node_modules frontend/dist
