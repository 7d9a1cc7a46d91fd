# The two commands of README.md: `make demo` (the main job) and `make test` (the test suite).
# Both install what they need first: the Debian Fashion-MNIST package and a venv in .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.hashveil-installed

.PHONY: demo test deps test-deps apt

demo: deps
	$(VENV)/bin/hashveil demo

# one code format, one-way imports (pyproject.toml's contracts), then the tests
test: test-deps
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

deps: $(STAMP)
	@$(MAKE) -s apt PKGS="dataset-fashion-mnist"

# the browser tests drive Debian's Chromium headless (never a downloaded browser); the store tests
# start their own PostgreSQL server from Debian's binaries (testkit/postgres.py), on loopback, in a temp
# dir; the Milvus server tests start the standalone binary that the `milvus` wheel of the test extra
# ships (testkit/milvus.py), likewise; the TLS tests make a throwaway CA with the openssl command
test-deps: deps
	@$(MAKE) -s apt PKGS="chromium chromium-driver postgresql openssl"

apt:
	@dpkg -s $(PKGS) >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PKGS))

$(STAMP): pyproject.toml
	[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)
