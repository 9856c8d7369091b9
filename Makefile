VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Debian packages the tests need (PostgreSQL for the production-profile test), installed when missing
APT_PACKAGES := postgresql

.PHONY: install system-packages test run bench lock

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[test,deploy]'
	touch $(STAMP)

install: $(STAMP)

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (install them, or run make as root)"; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  log=$$(mktemp); export DEBIAN_FRONTEND=noninteractive; \
	  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; } >$$log 2>&1; then \
	    cat $$log; rm -f $$log; exit 1; \
	  fi; \
	  rm -f $$log; \
	fi

test: install system-packages
	$(VENV)/bin/pytest -q -n 2 -p no:cacheprovider tests

run: install
	$(PY) -m pipelines_dagster.demo

bench: install
	$(PY) bench/changes.py
	$(PY) bench/executor.py
	$(PY) bench/pipeline.py

lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
