# bodypart-router — every entry point a user or CI needs.
#   make run    set everything up, start Orthanc with the router on 127.0.0.1:8042 / DICOM 4242
#   make test   the whole test suite (unit + integration against real Orthanc 1.10 and 1.12)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian 12 packages: Orthanc 1.10 + Python plugin + GDCM decoder; the rest serve the tests.
APT_RUN  := orthanc orthanc-python orthanc-gdcm
APT_TEST := orthanc-postgresql postgresql debootstrap

.PHONY: help setup setup-test run test test-unit demo faults bench train trixie-root clean

help:
	@echo "make run | test | demo [INPUT=dir] | faults | bench | train | setup | clean"

# --- installation ---------------------------------------------------------------------------
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Orthanc'"'"'s Python plugin embeds Python 3.11: run with PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

apt-run:
	@missing=$$(for p in $(APT_RUN); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

apt-test:
	@missing=$$(for p in $(APT_TEST); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

setup: apt-run $(VENV)/.installed

setup-test: setup apt-test

clean:
	rm -rf build .pytest_cache
