# The two commands: `make run` (the demo: legacy, new and the splitter, no Redis)
# and `make test` (the whole suite, with a real redis-server).
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-unit install system-deps lint bench clean images docs

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# BASE_PORT=9000 make run: legacy 9001, new 9002, upload_service 9003, proxy 9080, admin 9081 (scripts/demo.sh)
run: $(VENV)/.installed
	PY=$(PY) scripts/demo.sh

# redis-server (runtime-control tests), prometheus + promtool (ops tests) and chromium (the console, driven by
# Playwright: no browser download, Debian's), from the system package manager
SYSTEM_PACKAGES := redis-server:redis-server prometheus:prometheus promtool:prometheus chromium:chromium pg_ctlcluster:postgresql
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# the whole suite on TEST_WORKERS pytest-xdist workers: a test mostly waits (process start-up, timers, timeouts),
# so more workers than cores overlap the waits; --dist loadgroup runs each xdist_group (the fixed-port tests, a
# module's shared server) on one worker
TEST_WORKERS ?= 4
test: $(VENV)/.installed system-deps lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# the edit loop: tests/unit only (no process, no listening socket: conftest.py checks it), ~10 s
test-unit: $(VENV)/.installed
	$(PY) -m pytest -q tests/unit

# the benchmark: nginx (upstream and split_clients peer), wrk, and asgiproxy (the Python peer)
bench: $(VENV)/.installed
	@command -v wrk >/dev/null 2>&1 && { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || { \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx wrk curl >/dev/null; }
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/bench.py

# the three images the Kubernetes manifests run (deploy/kubernetes), tagged with the project's version;
# ENGINE=podman works the same. Then load them into the cluster (kind load docker-image ...) or push them.
ENGINE ?= docker
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
images:
	$(ENGINE) build -f deploy/docker/splitter.Dockerfile -t splitter:$(VERSION) .
	$(ENGINE) build -f deploy/docker/legacy_backend.Dockerfile -t splitter-legacy-backend:$(VERSION) .
	$(ENGINE) build -f deploy/docker/new_backend.Dockerfile -t splitter-new-backend:$(VERSION) .

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check splitter legacy_backend new_backend tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) splitter-demo.db* splitter-state.db* splitter-access.log uploads .pytest_cache

# the documentation site (MkDocs + Material) at http://127.0.0.1:8000; docs/reference/ is generated from the code
docs: $(VENV)/.installed
	$(PY) scripts/gen_docs.py
	$(VENV)/bin/mkdocs serve
