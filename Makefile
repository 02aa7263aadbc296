# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CHROMIUM ?= /usr/bin/chromium

.PHONY: install run test test-fast browser-deps screenshots lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## run: migrate the database (embedded unless DATABASE_URL is set) and serve
run: $(STAMP)
	$(BIN)/notify-worker migrate upgrade
	$(BIN)/notify-worker serve

## test: the whole suite, against TEST_DATABASE_URL or an embedded PostgreSQL
test: $(STAMP) browser-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest

## test-fast: everything but the browser tests
test-fast: $(STAMP)
	$(BIN)/pytest -m "not browser"

## browser-deps: Debian's Chromium for the Playwright tests (no browser download);
## waits for another apt run's lock rather than failing on it
browser-deps:
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get -o DPkg::Lock::Timeout=600 \
			install -y -qq chromium >/dev/null; \
	fi

## screenshots: the browser tests' pictures of the pages, into docs/screenshots
screenshots: $(STAMP) browser-deps
	NOTIFY_SCREENSHOT_DIR=$(CURDIR)/docs/screenshots $(BIN)/pytest -q tests/browser/test_screenshots.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
