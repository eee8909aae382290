# sendgate developer tasks (GNU make). The local stack is Kafka + Redis without
# Docker: see deploy/local/stack. Run `make help` for the targets.

VENV ?= .venv
PY = $(VENV)/bin/python
PYTHON3 ?= python3
STAMP = $(VENV)/.installed
STACK = deploy/local/stack
PYTEST_ARGS ?=

# Prerequisites (venv, stack) must run in order; a 2-core box gains nothing here.
.NOTPARALLEL:
.DEFAULT_GOAL := help
.PHONY: help venv native-check lint stack-up stack-down stack-status test-tools test unit demo chaos bench clean

help:
	@echo "make venv          create $(VENV) and install sendgate with the dev extras"
	@echo "make stack-up      start local Kafka (KRaft) + Redis; stack-down, stack-status"
	@echo "make test          lint, then unit + integration tests against the local stack (PYTEST_ARGS=...)"
	@echo "make lint          ruff check worker tests, mypy (strict) worker"
	@echo "make unit          unit tests only, no stack"
	@echo "make native-check  cargo test + cargo clippy -D warnings for the compiled core (worker/native)"
	@echo "make demo          stack up, topics, applier + gate on a scripted scenario, summary (KEEP_STACK=1 keeps the stack)"
	@echo "make chaos         fault-injection tests (SENDGATE_CHAOS=1, marker chaos)"
	@echo "make bench         throughput benchmark"
	@echo "make clean         remove caches and build output (not $(VENV), not stack data)"

venv: $(STAMP)

# The compiled core (worker/native): pip builds it through maturin, so a
# change to any Rust source reinstalls (and rebuilds) it too.
NATIVE = worker/native
NATIVE_SOURCES = $(NATIVE)/Cargo.toml $(NATIVE)/Cargo.lock $(wildcard $(NATIVE)/src/*.rs)
CARGO ?= cargo

# Reinstall only when pyproject.toml or the crate changes.
$(STAMP): pyproject.toml $(NATIVE_SOURCES)
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

stack-up:
	$(STACK) up

stack-down:
	$(STACK) down

stack-status:
	$(STACK) status

# The crate's own tests and lints; cargo links libpython for the test binary.
native-check:
	$(CARGO) test -q --manifest-path $(NATIVE)/Cargo.toml
	$(CARGO) clippy -q --manifest-path $(NATIVE)/Cargo.toml --all-targets -- -D warnings

# promtool (Debian's prometheus package) checks the alert rules and the
# dashboard's queries; `make test` installs it like the stack installs
# redis-server, and SENDGATE_REQUIRE_TOOLS=1 turns a missing one into a failure.
test-tools:
	@command -v promtool >/dev/null || { \
		echo "installing promtool (Debian package prometheus) with apt-get (first run only)"; \
		if [ "$$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# Both configured in pyproject.toml ([tool.ruff], [tool.mypy]); zero findings is the bar.
lint: venv
	$(VENV)/bin/ruff check worker tests
	$(VENV)/bin/mypy worker

test: venv native-check lint stack-up test-tools
	SENDGATE_REQUIRE_TOOLS=1 $(VENV)/bin/pytest -q tests $(PYTEST_ARGS)

unit: venv
	$(VENV)/bin/pytest -q tests/unit $(PYTEST_ARGS)

# The demo leaves nothing running: the stack is stopped again when the demo
# started it, unless KEEP_STACK=1 (then `sendgate explain`/`replay` work on).
demo: venv
	@if $(STACK) status >/dev/null 2>&1; then was_up=1; else was_up=0; fi; \
	$(STACK) up && $(VENV)/bin/sendgate topics create && $(VENV)/bin/sendgate demo; result=$$?; \
	if [ $$was_up = 0 ] && [ -z "$(KEEP_STACK)" ]; then \
		echo "stopping the local stack the demo started (make demo KEEP_STACK=1 keeps it)"; $(STACK) down; \
	fi; exit $$result

# The long fault-injection runs (tests marked chaos); tests/chaos/conftest.py prints
# the table (fault, runs, records, lost, duplicated, misrouted, wrongly allowed, wrongly suppressed, pause).
chaos: venv stack-up
	SENDGATE_CHAOS=1 $(VENV)/bin/pytest -q tests -m chaos --durations=0 $(PYTEST_ARGS)

bench: venv stack-up
	$(VENV)/bin/sendgate bench

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache $(NATIVE)/target
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
