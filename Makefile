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

# The long run (docs/harness.md): two shards at once, one per core, each with its own embedded
# server: LONG_MEMORY MemoryIndex + LONG_CHROMA ChromaIndex histories per shard. Shard 0 starts
# at index 0 (the fault x path coverage set) and also runs the rest of tests/concurrency.
LONG_MEMORY ?= 505
LONG_CHROMA ?= 10
LONG_WORKERS ?= 3
LONG_LOGS ?= build/test-long
LONG_ENV = SNAPMERGE_HISTORIES=$(LONG_MEMORY) SNAPMERGE_CHROMA_HISTORIES=$(LONG_CHROMA) \
	SNAPMERGE_MAX_WORKERS=$(LONG_WORKERS)
test-long:
	mkdir -p $(LONG_LOGS)
	start=$$(date +%s); \
	$(LONG_ENV) SNAPMERGE_HISTORY_OFFSET=0 $(PY) -m pytest -q -s -p no:cacheprovider \
		tests/concurrency $(PYTEST_ARGS) > $(LONG_LOGS)/shard-0.log 2>&1 & p0=$$!; \
	$(LONG_ENV) SNAPMERGE_HISTORY_OFFSET=$$(( $(LONG_MEMORY) + $(LONG_CHROMA) )) \
		$(PY) -m pytest -q -s -p no:cacheprovider -k histories_on \
		tests/concurrency/test_histories.py $(PYTEST_ARGS) > $(LONG_LOGS)/shard-1.log 2>&1 & p1=$$!; \
	wait $$p0; r0=$$?; wait $$p1; r1=$$?; \
	grep -h -A40 '^checked' $(LONG_LOGS)/shard-*.log | grep -E '^(checked|  [a-z_]+@)'; \
	tail -n 1 $(LONG_LOGS)/shard-0.log $(LONG_LOGS)/shard-1.log; \
	echo "test-long: $$(( $$(date +%s) - start )) s wall, shard exits $$r0 $$r1"; \
	[ $$r0 -eq 0 ] && [ $$r1 -eq 0 ]

check: lint typecheck layers test

bench:
	snapmerge bench all

demo:
	snapmerge demo
