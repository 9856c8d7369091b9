VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test run bench lock

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(VENV)/bin/pytest -q -n 2 -p no:cacheprovider tests

run: install
	$(PY) -m pipelines_dagster.demo $(if $(PORT),--port $(PORT))

bench: install
	$(PY) bench/changes.py
	$(PY) bench/executor.py
	$(PY) bench/pipeline.py

lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
