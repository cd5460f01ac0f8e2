# One Makefile; .ci/run calls these targets.
PY ?= python
PYTEST_ARGS ?=

.PHONY: install lint typecheck layers test test-quick test-long bench demo check package-check

install:
	$(PY) -m pip install -e '.[dev]'

lint:
	ruff check .
	ruff format --check .

typecheck:
	mypy

layers:
	lint-imports

# The README's test command. Exit code 5 (no tests collected) is a failure here, never a pass.
test:
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

test-long:
	SNAPMERGE_HISTORIES=200 $(PY) -m pytest -q tests/concurrency $(PYTEST_ARGS)

check: lint typecheck layers test

bench:
	snapmerge bench all

demo:
	snapmerge demo
