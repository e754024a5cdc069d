# balloon-harness: every target installs what it needs on a fresh Debian/Ubuntu machine.
#   make demo   run the main job end to end (boot, overcommit, compare, report)
#   make test   the whole suite: unit tests and real-VM tests
#   make bench  boot/restore/daemon figures on this machine

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BH     := $(VENV)/bin/balloon-harness
# Extra arguments for pytest, e.g. make test PYTEST_ARGS="-k balloon"
PYTEST_ARGS ?=

.PHONY: all deps venv image test unit vm demo bench doctor reap clean mutation

all: test

deps:
	@ci/install-system-deps.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,libvirt]'
	@touch $@

venv: deps $(VENV)/.installed

image: venv
	$(BH) image build

test: image
	ci/with-libvirtd.sh $(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	# Not VMs, but one test talks to a real libvirtd.
	ci/with-libvirtd.sh $(PY) -m pytest -m "not vm" $(PYTEST_ARGS)

vm: image
	ci/with-libvirtd.sh $(PY) -m pytest -m vm $(PYTEST_ARGS)

demo: image
	$(BH) demo

# The daemon's host benchmark (file source), then boot/restore/RSS and the daemon in a
# guest (real PSI); the last line printed is one JSON object.
bench: image
	$(PY) bench/bench_intermediate.py
	$(BH) bench

# Mutation testing (mutmut) of the daemon's decisions and the classifier: each module's score
# and every surviving mutant; exit 1 below 90 %. Nightly, not part of `make test`.
mutation: venv
	$(PY) ci/mutation.py

doctor: venv
	$(BH) doctor

reap: venv
	$(BH) reap

clean:
	-$(BH) reap
	rm -rf $(VENV) artifacts runs .pytest_cache mutants
