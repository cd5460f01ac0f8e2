# One Makefile; .ci/run calls these targets.
PY ?= python
PYTEST_ARGS ?=

.PHONY: install lint typecheck layers test test-quick test-long test-chroma-1021 bench demo check package-check

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
	$(CHROMA_1021_PY) -m pip install -q -e . 'chromadb==1.0.21' 'pytest>=8'
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

test-long:
	SNAPMERGE_HISTORIES=200 $(PY) -m pytest -q tests/concurrency $(PYTEST_ARGS)

check: lint typecheck layers test

bench:
	snapmerge bench all

demo:
	snapmerge demo
