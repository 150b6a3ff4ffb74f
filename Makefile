# phone-detector: `make run` serves on port 8000, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
TOOLS := .tools
UV_VERSION := 0.13.9
UV := $(TOOLS)/bin/uv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install system-deps audit lint format test run bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

# The venv is rebuilt whenever the lock file changes; uv installs exactly what uv.lock pins.
$(VENV)/.installed: $(UV) uv.lock pyproject.toml
	$(UV) sync --locked --extra test
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check app tests
	$(BIN)/ruff format --check app tests
	$(BIN)/mypy app

format: install
	$(BIN)/ruff format app tests
	$(BIN)/ruff check --fix app tests

# Prometheus, Alertmanager (alerting tests), Chromium (web page test) and GStreamer's RTSP
# server with its Python bindings (the camera-source tests' RTSP camera), installed when missing.
system-deps:
	EXTRA_SYSTEM_PACKAGES="chromium python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good" bash scripts/system-deps.sh

test: install lint system-deps
	$(BIN)/pytest
	$(MAKE) --no-print-directory audit

# Known vulnerabilities in the locked dependencies. Fails on any finding; only a
# vulnerability service that cannot be reached at all (no network) is reported and passed.
audit: install
	@$(UV) export --locked --extra test --no-emit-project --format requirements-txt > .venv/audit-requirements.txt
	@out=$$($(BIN)/pip-audit -r .venv/audit-requirements.txt --disable-pip --no-deps --progress-spinner off 2>&1); rc=$$?; \
	if [ $$rc -ne 0 ]; then echo "$$out"; exit $$rc; \
	elif echo "$$out" | grep -q "could not be audited"; then \
		echo "pip-audit: SKIPPED $$(echo "$$out" | grep -c 'could not be audited') packages: the vulnerability service is unreachable from this machine"; \
	else echo "pip-audit: no known vulnerabilities"; \
	fi

run: install
	$(BIN)/phone-detector serve --host $${PHONE_DET_HOST:-0.0.0.0} --port $${PHONE_DET_PORT:-8000}

# The benchmark (never part of `make test`): our service against this machine's ceiling, a
# per-request baseline and peer servers (Ray Serve, LitServe, BentoML). The peers pull in
# many packages, so they get their own venv; results (JSON, Markdown, PNG) in bench/results/.
BENCH_VENV := bench/.venv
BENCH_ARGS ?=

$(BENCH_VENV)/.installed: $(UV) uv.lock pyproject.toml
	UV_PROJECT_ENVIRONMENT=$(BENCH_VENV) $(UV) sync --locked --extra bench
	touch $@

bench: install $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
