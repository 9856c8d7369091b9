VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Debian packages the tests need, installed when missing: PostgreSQL for the production-profile test, the browser
# test's Chromium and its driver, and fonts for screenshots.
APT_PACKAGES ?= postgresql chromium chromium-driver fonts-liberation fonts-noto-color-emoji
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-packages lint test run screenshots bench lock

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[test,deploy]'
	touch $(STAMP)

install: $(STAMP)

# Installs what is missing of APT_PACKAGES, quietly; does nothing when all are installed. Without dpkg and apt-get
# (not Debian or Ubuntu) it looks for the programs the tests run and says what to install when one is missing.
system-packages:
	@if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then \
	  missing=""; \
	  { command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || \
	    missing="$$missing\n  PostgreSQL server (initdb, postgres) for tests/deploy/test_production_instance.py"; \
	  { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; } && command -v chromedriver >/dev/null || \
	    missing="$$missing\n  Chromium and chromedriver for tests/e2e/test_browser.py"; \
	  if [ -n "$$missing" ]; then \
	    printf "make test needs, and this machine has no apt-get to install:$$missing\n" >&2; \
	    printf "Install them with this system's package manager (for example: dnf install postgresql-server chromium chromedriver;\n" >&2; \
	    printf "brew install postgresql chromium chromedriver), then run make test again.\n" >&2; \
	    exit 1; \
	  fi; \
	  exit 0; \
	fi; \
	missing=$$(for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:" $$missing; \
	  log=$$(mktemp); \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	      --no-install-recommends $$missing; } >$$log 2>&1 || { cat $$log; rm -f $$log; exit 1; }; \
	  rm -f $$log; \
	fi

# static checks, zero findings: ruff (pyproject.toml's [tool.ruff]) and mypy ([tool.mypy])
lint: install
	$(VENV)/bin/ruff check pipelines_dagster tests bench
	$(VENV)/bin/mypy

test: install system-packages lint
	$(VENV)/bin/pytest -q -n 2 -p no:cacheprovider tests

# The demo (README, "Five minutes with the demo"): one per folder, PORT and FOLDER (default .demo) for another.
run: install
	@$(PY) -m pipelines_dagster.demo $(if $(PORT),--port $(PORT)) $(if $(FOLDER),--folder $(FOLDER))

# The README's screenshots, taken by the browser test against the demo.
screenshots: install system-packages
	PIPELINES_SCREENSHOTS_DIR=$(CURDIR)/docs $(VENV)/bin/pytest -q -p no:cacheprovider tests/e2e/test_browser.py

# benchmarks, not tests: each prints its figures (bench/scale.py runs 200 changes through `dagster dev`, minutes)
bench: install
	$(PY) bench/changes.py
	$(PY) bench/executor.py
	$(PY) bench/pipeline.py
	$(PY) bench/scale.py

lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
