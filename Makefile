# sipshield: the two commands are `make run` and `make test`; both run `make setup` first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
BIN    := $(VENV)/bin
POLICY ?= kamailio-cfg/policy.example.yaml
LAB    ?= lab
# Kamailio embeds Debian's Python, so the venv must be built from it.
SYSTEM_PYTHON := /usr/bin/python3
DEB_PACKAGES := kamailio kamailio-python3-modules kamailio-tls-modules \
                rtpengine-daemon sip-tester redis-server \
                python3-venv openssl procps

.PHONY: help setup deb-packages run test lint bench clean

help:
	@echo "make run    bring the lab up on loopback (Redis, rtpengine, SBC, PBX) and follow events"
	@echo "make test   lint and run the whole test suite against real processes"
	@echo "make bench  benchmark sipshield against the native-Kamailio reference"
	@echo "make setup  install Debian packages and the venv (run by the others)"

setup: deb-packages $(BIN)/.installed

# Idempotent and quick: apt runs only when a package is missing.
deb-packages:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/.installed: setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

run: setup
	$(BIN)/sipshield lab up --policy $(POLICY) --dir $(LAB)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/run.py

clean:
	-$(BIN)/sipshield lab down --dir $(LAB) 2>/dev/null
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
