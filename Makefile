# Offsync — `make up` runs the whole stack on embedded defaults, `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PKGS   := shared services profile-service publish-service sync-service conflict-service device-sdk bench

.PHONY: venv browser-deps js test-js up test test-browser console-screenshots test-unit test-chaos bench bench-quick lint compose-config clean

venv: $(STAMP)

$(STAMP): requirements.txt $(foreach p,$(PKGS),$(wildcard $(p)/pyproject.toml))
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps $(foreach p,$(PKGS),$(if $(wildcard $(p)/pyproject.toml),-e ./$(p)))
	@touch $(STAMP)

# The TypeScript SDK (device-sdk/js, @offsync/client) and the field app bundled from it into
# sync-service's static folder. Node 20+ and npm; packages come from the lockfile only.
JS        := device-sdk/js
JS_STAMP  := $(JS)/node_modules/.installed
JS_SRC    := $(wildcard $(JS)/src/*.ts $(JS)/app/*.ts) $(JS)/build.mjs
APP_JS    := sync-service/sync_service/static/app/app.js

$(JS_STAMP): $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund
	@touch $(JS_STAMP)

$(APP_JS): $(JS_STAMP) $(JS_SRC)
	cd $(JS) && npm run -s build

js: $(APP_JS)

# The SDK's unit tests (node's test runner): the shared vectors, the store contract, the client.
test-js: $(JS_STAMP)
	cd $(JS) && npm test -s

up: venv js
	$(PY) -m offsync_stack up $(ARGS)

# Browser tests drive the system's Chromium (Playwright's own download cannot work offline).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; }

test: venv browser-deps js test-js
	$(PY) -m pytest $(ARGS)

# The admin console in headless Chromium (also part of `make test`).
test-browser: venv browser-deps
	$(PY) -m pytest tests/browser -m browser $(ARGS)

# Regenerates the screenshots in docs/console/ (the browser tests save them on the way).
console-screenshots: venv browser-deps
	OFFSYNC_CONSOLE_SCREENSHOTS=docs/console $(PY) -m pytest tests/browser -m browser $(ARGS)

test-unit: venv
	$(PY) -m pytest -m "not integration and not e2e" $(ARGS)

test-chaos: venv
	$(PY) -m pytest tests/chaos -m chaos $(ARGS)

bench: venv js
	$(PY) -m offsync_bench $(ARGS)

bench-quick: venv js
	$(PY) -m offsync_bench --quick $(ARGS)

# The same gates as .pre-commit-config.yaml; config in the root pyproject.toml.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

compose-config:
	docker compose config -q 2>/dev/null || docker-compose config -q

clean:
	rm -rf $(VENV) .offsync .pytest_cache $(JS)/node_modules $(JS)/dist $(JS)/build $(APP_JS)
