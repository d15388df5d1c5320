# Offsync — `make up` runs the whole stack on embedded defaults, `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PKGS   := shared services profile-service publish-service sync-service conflict-service device-sdk bench

.PHONY: venv browser-deps up test test-browser console-screenshots test-unit test-chaos bench bench-quick lint compose-config clean

venv: $(STAMP)

$(STAMP): requirements.txt $(foreach p,$(PKGS),$(wildcard $(p)/pyproject.toml))
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps $(foreach p,$(PKGS),$(if $(wildcard $(p)/pyproject.toml),-e ./$(p)))
	@touch $(STAMP)

up: venv
	$(PY) -m offsync_stack up $(ARGS)

# Browser tests drive the system's Chromium (Playwright's own download cannot work offline).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; }

test: venv browser-deps
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

bench: venv
	$(PY) -m offsync_bench $(ARGS)

bench-quick: venv
	$(PY) -m offsync_bench --quick $(ARGS)

# The same gates as .pre-commit-config.yaml; config in the root pyproject.toml.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

compose-config:
	docker compose config -q 2>/dev/null || docker-compose config -q

clean:
	rm -rf $(VENV) .offsync .pytest_cache
