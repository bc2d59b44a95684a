# One-command set-up: `make demo` (train on synthetic leaves), `make test` (the fast tests: unit tests and one
# end-to-end first run) and `make test-all` (the whole suite, what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo test test-all bench clean postgres docs

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/plantpheno data synth .demo/leaves --per-class 60 --image-size 96 --seed 0 --overwrite
	$(BIN)/plantpheno train demo data.root=.demo/leaves

# The report's browser test drives Debian's chromium (Playwright cannot download its own browser offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "make: chromium is missing; as root: apt-get install chromium (the browser test skips without it)"; fi; }

# The fast selection: everything but the end-to-end tests (marked e2e by tests/conftest.py), which keeps one
# quick train -> evaluate -> report -> register -> predict (tests/smoke). Needs neither chromium nor PostgreSQL.
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not e2e"

# The whole suite, end-to-end tests included (CI: .ci/run).
test-all: $(STAMP) browser postgres
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# PostgreSQL's server programs, for the several-machines tuning test (tests/integration/test_cluster.py starts
# its own server on 127.0.0.1). Debian's package, installed when missing and when we may (root, apt-get: CI).
postgres:
	@if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's postgresql"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "note: PostgreSQL is not installed and cannot be installed here (needs root and apt-get):" \
	  "tests/integration/test_cluster.py will be skipped"; fi

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/run_all.py

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or reference fails the build.
docs: $(STAMP)
	HF_HUB_OFFLINE=1 NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf .demo runs site
