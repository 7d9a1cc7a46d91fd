# The two commands of README.md: `make demo` (the main job) and `make test` (the test suite).
# Both install what they need first: the Debian Fashion-MNIST package and a venv in .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.hashveil-installed

.PHONY: demo test deps system-deps

demo: deps
	$(VENV)/bin/hashveil demo

test: deps
	$(PY) -m pytest -q

deps: system-deps $(STAMP)

system-deps:
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)

$(STAMP): pyproject.toml
	[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)
