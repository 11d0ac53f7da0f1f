# citywatch: `make demo` runs the whole system, `make test` runs the test suite.
# Both install what they need first (Debian packages as root, .venv, Python packages).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-fast lint typecheck check demo stack-up stack-down stack-status bench clean

setup:
	bash scripts/bootstrap.sh

# The whole suite, after lint and types (CI runs this).
test: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests

# The fast loop: unit tests only (no broker, database or browser), without the long ones (marker `slow`),
# property tests capped at 10 examples (--hypothesis-profile=fast), on two workers (pytest-xdist).
# `make test` runs every one of them, at full examples.
# Compiled modules are cached (an environment with PYTHONDONTWRITEBYTECODE set recompiles every module in every
# worker, 4-6 s of each worker's start).
# Temporary files in RAM (/dev/shm) where there is one: the alert stores commit with synchronous=FULL, and on a
# busy shared disk those fsyncs cost about 2 s of the loop; no unit test can tell RAM from disk (a kill -9 keeps
# both). pytest keeps its last 3 runs' directories there (about 30 MB each).
FAST_WORKERS ?= -n 2
FAST_TMPDIR ?= $(if $(wildcard /dev/shm/.),/dev/shm,$(TMPDIR))
test-fast:
	TMPDIR=$(FAST_TMPDIR) PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -p no:cacheprovider -m "not integration and not slow" --hypothesis-profile=fast $(FAST_WORKERS) $(PYTEST_ARGS) tests/unit

lint:
	.venv/bin/ruff check .

typecheck:
	.venv/bin/mypy

check: setup lint typecheck test-fast

demo: setup
	bash scripts/demo.sh

stack-up: setup
	bash scripts/stack.sh up

stack-down:
	bash scripts/stack.sh down

stack-status:
	bash scripts/stack.sh status

bench: setup
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	bash scripts/stack.sh down || true
	rm -rf .stack var
