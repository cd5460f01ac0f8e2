# One Makefile; .ci/run calls these targets.
PY ?= python
PYTEST_ARGS ?=

.PHONY: install lint typecheck layers test test-long test-chroma-1021 bench demo check

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

# The readers' chromadb line (the original pipeline pins 1.0.21) in a second virtual environment:
# the functional, contract and compatibility suites on it, then the negative control of the
# 1.0.21 reader test from this environment (a 1.5 publish that the 1.0.21 reader cannot open).
# By default the second venv is layered on this one (run it from the project's venv): a .pth file
# adds this environment's packages behind chromadb 1.0.21 and the three packages 1.0.21 needs that
# 1.5 does not, installed with --ignore-installed so nothing of this environment is touched.
# That takes seconds; CHROMA_1021_ISOLATED=1 installs everything separately (minutes).
CHROMA_1021_VENV ?= .venv-chroma1021
CHROMA_1021_SUITES ?= tests/functional tests/contract tests/compat
CHROMA_1021_PKGS = 'chromadb==1.0.21' 'posthog>=2.4,<6' backoff distro
CHROMA_1021_PY = $(CHROMA_1021_VENV)/bin/python
PURELIB = import sysconfig; print(sysconfig.get_paths()["purelib"])

$(CHROMA_1021_VENV)/.installed: pyproject.toml
	rm -rf $(CHROMA_1021_VENV)
	$(PY) -m venv $(CHROMA_1021_VENV)
ifeq ($(CHROMA_1021_ISOLATED),1)
	$(CHROMA_1021_PY) -m pip install -q --upgrade pip
	$(CHROMA_1021_PY) -m pip install -q -e '.[local]' 'chromadb==1.0.21' 'pytest>=8'
else
	$(PY) -c '$(PURELIB)' > "$$($(CHROMA_1021_PY) -c '$(PURELIB)')/_snapmerge_base_env.pth"
	$(CHROMA_1021_PY) -m pip install -q --no-deps --ignore-installed $(CHROMA_1021_PKGS)
endif
	touch $@

test-chroma-1021: $(CHROMA_1021_VENV)/.installed
	$(CHROMA_1021_PY) -c "import chromadb; assert chromadb.__version__ == '1.0.21', chromadb.__version__"
	ANONYMIZED_TELEMETRY=False $(CHROMA_1021_PY) -m pytest -q -p no:cacheprovider $(CHROMA_1021_SUITES) $(PYTEST_ARGS)
	SNAPMERGE_READER_PYTHON=$(abspath $(CHROMA_1021_PY)) ANONYMIZED_TELEMETRY=False \
		$(PY) -m pytest -q tests/compat/test_publish_format.py -k negative_control $(PYTEST_ARGS)

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
