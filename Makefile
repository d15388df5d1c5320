# Offsync — `make up` runs the whole stack on embedded defaults, `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PKGS   := shared services profile-service publish-service sync-service conflict-service device-sdk bench

# Compiled modules (and pytest's assertion-rewritten tests) are cached under the venv even where the
# environment sets PYTHONDONTWRITEBYTECODE: without a cache every xdist worker, service process and
# pytest run recompiles ~500 modules (collecting the suite: 10 s of CPU a worker, 4 s with it).
export PYTHONDONTWRITEBYTECODE :=
export PYTHONPYCACHEPREFIX ?= $(abspath $(VENV))/pycache

.PHONY: venv browser-deps docs-deps js test-js kafka-deps kafka-fetch lb-deps up test test-serial test-browser console-screenshots test-unit test-chaos test-kafka test-kafka-tiers test-kafka-chaos bench bench-quick lint lint-tests compose-config k8s-validate clean

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

up: venv js $(if $(filter kafka,$(OFFSYNC_BROKER)),kafka-deps)
	$(PY) -m offsync_stack up $(ARGS)

# Browser tests drive the system's Chromium (Playwright's own download cannot work offline).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; }

# The docs' examples (tests/e2e/test_docs_run.py) run curl and jq, as a reader would.
docs-deps:
	@command -v jq >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q jq curl; }

# The suite on XDIST_WORKERS pytest-xdist workers, each with its own embedded PostgreSQL and broker
# (the session-scoped `infra` fixture runs once per worker); --dist loadscope keeps a module's tests
# on one worker, so a module-scoped `stack` starts once, and modules are handed out slowest kind
# first (browser, e2e, integration, then unit; offsync_stack.testing) rather than largest first, so
# no worker is left running the long ones alone at the end. Tests marked `serial` (they cannot share
# the machine) are left out of that pass and run after it in one process, only when some were
# selected. XDIST_WORKERS=0 runs the parallel pass in this process too (debugging: pdb, -x, print);
# `make test-serial` is the whole suite in one process. Four workers on two cores: many tests
# wait (read timeouts, token expiry, broker restarts) and the extra workers fill those waits (four
# against three, alternated on 2026-12-07: 177-204 s against 180-218 s of pytest, four pairs).
XDIST_WORKERS ?= 4
test: venv browser-deps docs-deps js test-js
	@serial=$$(mktemp); rc=0; \
	$(PY) -m pytest -n $(XDIST_WORKERS) --dist loadscope --no-loadscope-reorder --serial-tests=exclude --serial-list=$$serial $(ARGS) || rc=$$?; \
	if [ -s $$serial ]; then \
	  echo "--- the tests marked serial, in one process: $$(wc -l < $$serial)"; \
	  r=0; $(PY) -m pytest --serial-tests=only $(ARGS) || r=$$?; \
	  if [ $$rc -eq 5 ] || { [ $$rc -eq 0 ] && [ $$r -ne 5 ]; }; then rc=$$r; fi; \
	fi; \
	rm -f $$serial; exit $$rc

# The whole suite in one process, as make test ran it before it went parallel (slower; for
# debugging an interaction between tests, or bisecting one that fails only in the parallel run).
test-serial: venv browser-deps docs-deps js test-js
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
	$(PY) -m pytest tests/chaos -m "chaos and not kafka" $(ARGS)

# Apache Kafka 4 (deploy/kafka/pom.xml) runs on Java 17+ and is fetched with Maven into
# ~/.cache/offsync (never into the repo); HAProxy is the load balancer of the scale-out tests.
kafka-deps:
	@{ command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; } || { apt-get update -q && apt-get install -y -q openjdk-17-jre-headless maven; }

kafka-fetch: venv kafka-deps
	$(PY) -m offsync_stack kafka-fetch

lb-deps:
	@command -v haproxy >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q haproxy; }

# The integration, end-to-end and chaos tiers on a 3-node KRaft cluster (RF 3,
# min.insync.replicas=2, acks=all). API fuzzing never touches the broker: it runs in make test.
test-kafka: test-kafka-tiers test-kafka-chaos

test-kafka-tiers: venv browser-deps js kafka-fetch lb-deps
	OFFSYNC_TEST_BROKER=kafka OFFSYNC_TEST_KAFKA_BROKERS=3 $(PY) -m pytest -m "(integration or e2e) and not chaos" -k "not fuzz" $(ARGS)

test-kafka-chaos: venv kafka-fetch lb-deps
	OFFSYNC_TEST_BROKER=kafka $(PY) -m pytest tests/chaos -m "chaos and kafka" $(ARGS)

bench: venv js
	$(PY) -m offsync_bench $(ARGS)

bench-quick: venv js
	$(PY) -m offsync_bench --quick $(ARGS)

# Each service's tests import their own helpers by bare name (pytest puts the folder on the
# path) and share names (conftest) with the others' tests: mypy checks one folder at a time.
TEST_DIRS := shared/tests services/tests bench/tests device-sdk/tests profile-service/tests \
	publish-service/tests sync-service/tests conflict-service/tests

# The same gates as .pre-commit-config.yaml; config in the root pyproject.toml.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	@$(MAKE) -s lint-tests

# Also the pre-commit hook's (.pre-commit-config.yaml), so the list of folders lives here only.
lint-tests: venv
	@for d in $(TEST_DIRS); do echo "mypy $$d"; MYPYPATH=$$d $(PY) -m mypy $$d || exit 1; done

# docker-compose.yml must refuse to start without its secrets, and be valid with them.
COMPOSE_SECRETS := OFFSYNC_JWT_SECRET=validate-only-0123456789abcdef0123456789 OFFSYNC_PG_PASSWORD=validate-only
compose-config:
	@if docker compose version >/dev/null 2>&1; then dc="docker compose"; else dc=docker-compose; fi; \
	! $$dc config -q 2>/dev/null || { echo "docker-compose.yml starts without its secrets"; exit 1; }; \
	env $(COMPOSE_SECRETS) $$dc config -q && echo "compose config: ok (and refused without secrets)"

# Schema check of the Kubernetes manifests (kubernetes-validate, pinned in requirements.txt).
k8s-validate: venv
	$(VENV)/bin/kubernetes-validate --strict --quiet deploy/k8s/*.yaml && echo "k8s manifests: ok"

clean:
	rm -rf $(VENV) .offsync .pytest_cache $(JS)/node_modules $(JS)/dist $(JS)/build $(APP_JS)
