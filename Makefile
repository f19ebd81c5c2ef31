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
APT_RUN  := orthanc orthanc-python orthanc-gdcm python3-venv
APT_TEST := orthanc-postgresql postgresql debootstrap prometheus

# The shipped orthanc-config/orthanc.json names the router's script and Lua hook by these absolute
# paths, so that a copy of the configuration elsewhere still lets Orthanc start (see plugin/bodypart_router/orthanc_plugin/bootstrap/orthanc_bootstrap.py).
BOOTSTRAP_DIR := /usr/local/share/bodypart-router
# make install: where the router goes, and the Orthanc configuration directory it is added to.
PREFIX        ?= /opt/bodypart-router
ORTHANC_CONFIG ?= /etc/orthanc

.PHONY: help setup apt-run apt-test bootstrap run test test-unit demo faults bench bench-fusion train trixie-root install clean

help:
	@echo "make run | test | demo [INPUT=dir] | faults | bench | train | setup | install [ORTHANC_CONFIG=/etc/orthanc] | clean"

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

setup: apt-run apt-test $(VENV)/.installed bootstrap

bootstrap: $(BOOTSTRAP_DIR)/orthanc_bootstrap.py $(BOOTSTRAP_DIR)/shutdown.lua

$(BOOTSTRAP_DIR)/orthanc_bootstrap.py: plugin/bodypart_router/orthanc_plugin/bootstrap/orthanc_bootstrap.py
	$(SUDO) install -D -m 644 $< $@

$(BOOTSTRAP_DIR)/shutdown.lua: plugin/bodypart_router/orthanc_plugin/bootstrap/shutdown.lua
	$(SUDO) install -D -m 644 $< $@

# Adds the router to an existing Orthanc (Debian's service by default): copies the router and the
# model to PREFIX, builds PREFIX/venv with the system python3 (the one Orthanc embeds), and edits
# ORTHANC_CONFIG in place (PythonScript, LuaScripts, UserMetadata; backups *.bak-bodypart-router),
# adding ORTHANC_CONFIG/bodypart-router.json. Restart Orthanc afterwards. See docs/install.md.
install: apt-run
	$(SUDO) /usr/bin/python3 scripts/install.py --prefix $(PREFIX) --orthanc-config $(ORTHANC_CONFIG) $(INSTALL_ARGS)

# Debian 13 root with Orthanc 1.12.7 + orthanc-python 5.0, for the 1.12 integration tests
# (labels). Idempotent: rebuilt only when its package list or the dependencies change.
trixie-root: setup
	$(SUDO) $(PY) scripts/trixie_root.py

# --- running -----------------------------------------------------------------------------------
# The shipped config names its script and Lua hook by absolute paths (installed by `setup`) and its
# other paths relative to its own directory, so it runs from anywhere; running from orthanc-config/
# keeps Orthanc's own relative paths there too. Ctrl-C stops Orthanc; the router stops its threads in < 10 s.
run: setup
	@test -f models/bodypart_router.onnx || { echo "models/bodypart_router.onnx is missing: run 'make train' or restore it from git"; exit 1; }
	@mkdir -p build
	@$(PY) -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
	  r=s.connect_ex(("127.0.0.1", 8042)); sys.exit(0 if r else "port 8042 is already in use (the Debian orthanc service? stop it with: sudo systemctl stop orthanc)")'
	cd orthanc-config && exec /usr/sbin/Orthanc orthanc.json

# Router + two demo AI peers (real Orthanc processes); sends tests/fixtures or INPUT by C-STORE,
# prints where each file arrived and writes build/demo-report.json. Non-zero exit if any file
# did not arrive where its class routes. KEEP=1 leaves the servers up (Ctrl-C) to browse
# Orthanc Explorer and the status page.
demo: setup
	$(PY) scripts/demo.py $(if $(KEEP),--keep-running) $(INPUT)

# --- tests -------------------------------------------------------------------------------------
test: setup trixie-root
	$(PY) -m pytest -q -rs tests

# Durability scenarios against real processes (peer down, kill -9, duplicates, malformed
# corpus, two nodes on PostgreSQL): one JSON line each; non-zero exit on any loss or duplicate.
faults: setup
	$(PY) scripts/faults.py

# Benchmarks (about 15 minutes on 2 cores): prints a table, writes bench/results.json.
# ARGS=--quick for a smoke run; ARGS="--only classify,ingest,latency,rss,index" for some sections.
bench: setup
	PYTHONPATH=tests $(PY) -m bench.run $(ARGS)

# Reproduces models/ from ../shared/data/xray-bodypart (about 55 minutes on 2 CPU cores: backbone
# features of ~248,000 views, 26 held-out runs and 18 of the image checks, the shipped heads,
# evaluation).
train: setup
	$(PY) -m pip install -q -e '.[train,test]'
	nice -n 5 $(PY) -m training.train --data ../shared/data/xray-bodypart --out models/

test-unit: setup
	$(PY) -m pytest -q -m "not integration" tests

clean:
	rm -rf build .pytest_cache

# Header fusion accuracy on the test split with realistic synthetic headers (README, "Header evidence").
bench-fusion: setup
	$(PY) -m bench.header_fusion $(ARGS)
