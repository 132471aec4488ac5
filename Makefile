# sipshield: the two commands are `make run` and `make test`; both run `make setup` first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
BIN    := $(VENV)/bin
POLICY ?= kamailio-cfg/policy.example.yaml
LAB    ?= lab
# Kamailio embeds Debian's Python, so the venvs are built from it.
SYSTEM_PYTHON := /usr/bin/python3
# ansible-core, ansible-lint and yamllint live here, apart from .venv.
TOOLS  := .tools
# Ansible provisions this machine as it does production hosts: the same roles,
# with the local inventory (packages and .venv only, no services).  The stamp
# lives in .venv so that removing .venv provisions again; dpkg's status file
# is an input so that a removed package is put back (directories are listed
# too, so that a deleted file counts as a change).
SETUP_STAMP  := $(VENV)/.provisioned
SETUP_INPUTS := $(shell find ansible) setup.cfg pyproject.toml /var/lib/dpkg/status
ANSIBLE_ENV  := PATH=$(CURDIR)/$(TOOLS)/bin:$$PATH ANSIBLE_DISPLAY_SKIPPED_HOSTS=false

.PHONY: help setup run test lint bench fuzz soak clean

help:
	@echo "make run    bring the lab up on loopback (Redis, rtpengine, SBC, PBX) and follow events"
	@echo "make test   lint and run the whole test suite against real processes"
	@echo "make bench  benchmark sipshield against the native-Kamailio reference"
	@echo "make fuzz   throw 200,000 mutated messages at the lab (QUICK=1: 4,000; SEED=n)"
	@echo "make soak   30 minutes of mixed traffic with attacks; fails on growth that does not level off"
	@echo "make setup  provision this machine with Ansible: Debian packages and the venv (run by the others)"

setup: $(SETUP_STAMP)

$(SETUP_STAMP): $(TOOLS)/.installed $(SETUP_INPUTS)
	$(ANSIBLE_ENV) ansible-playbook -i ansible/inventories/local -c local ansible/site.yml
	@touch $@

# Bootstrap: a fresh Debian 12 may lack python3-venv.
$(TOOLS)/.installed: ansible/requirements-tools.txt
	@dpkg-query -W -f='$${Status}' python3-venv 2>/dev/null | grep -q 'install ok installed' || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
	@test -x $(TOOLS)/bin/python || $(SYSTEM_PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check -r ansible/requirements-tools.txt
	@touch $@

run: setup
	$(BIN)/sipshield lab up --policy $(POLICY) --dir $(LAB)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(TOOLS)/bin/yamllint --strict ansible .yamllint .ansible-lint
	$(ANSIBLE_ENV) ansible-lint -q ansible

test: lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m bench.run $(if $(QUICK),--quick)

fuzz: setup
	$(BIN)/python -m fuzz.run $(if $(QUICK),--quick) $(if $(SEED),--seed $(SEED))

# QUICK=1: 3 minutes; MINUTES=N: another length.
soak: setup
	$(BIN)/python -m soak.run $(if $(QUICK),--quick) $(if $(MINUTES),--minutes $(MINUTES))

clean:
	-$(BIN)/sipshield lab down --dir $(LAB) 2>/dev/null
	rm -rf $(VENV) $(TOOLS) *.egg-info .pytest_cache .ruff_cache
