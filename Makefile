# balloon-harness: every target installs what it needs on a fresh Debian/Ubuntu machine.
#   make demo   run the main job end to end (boot, overcommit, compare, report)
#   make test   the whole suite: unit tests and real-VM tests
#   make bench  boot/restore/daemon figures on this machine

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BH     := $(VENV)/bin/balloon-harness
# Extra arguments for pytest, e.g. make test PYTEST_ARGS="-k balloon" (select markers with MARK=,
# not -m: each phase below adds its own)
PYTEST_ARGS ?=
MARK ?=
# test/unit/vm run in two phases: the parallel-safe tests under pytest-xdist, then the tests
# marked `measure` alone, since parallel guests on the same cores change their figures (README,
# "Nightly CI"). XDIST= runs the first phase serially too.
XDIST ?= -n 2 --dist loadgroup
_and := $(if $(MARK),($(MARK)) and ,)
# Both phases always run; "no tests selected" (exit 5) in one of them is not a failure.
define two_phases
	@a=0; b=0; \
	ci/with-libvirtd.sh $(PY) -m pytest -m "$(_and)not measure" $(XDIST) $(PYTEST_ARGS) || a=$$?; \
	ci/with-libvirtd.sh $(PY) -m pytest -m "$(_and)measure" $(PYTEST_ARGS) || b=$$?; \
	echo "make: parallel phase exit $$a, measuring phase exit $$b"; \
	[ $$a -eq 0 -o $$a -eq 5 ] && [ $$b -eq 0 -o $$b -eq 5 ] && [ "$$a$$b" != 55 ]
endef

.PHONY: all deps venv image test unit vm _phases demo bench slowest doctor reap clean mutation

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
	$(two_phases)

# Not VMs, but one test talks to a real libvirtd.
unit: venv
	$(MAKE) --no-print-directory _phases MARK="not vm"

vm: image
	$(MAKE) --no-print-directory _phases MARK="vm"

_phases:
	$(two_phases)

demo: image
	$(BH) demo

# The daemon's host benchmark (file source), then boot/restore/RSS and the daemon in a
# guest (real PSI); the last line printed is one JSON object.
bench: image
	$(PY) bench/bench_intermediate.py
	ci/with-libvirtd.sh $(BH) bench

# The ten slowest tests of a run and what they waited for (VM starts by kind, test body), from
# its JUnit report: make test PYTEST_ARGS=--junitxml=junit.xml && make slowest
JUNIT ?= junit.xml
slowest: venv
	$(PY) -m harness.slowest $(JUNIT)

# Mutation testing (mutmut) of the daemon's decisions and the classifier: each module's score
# and every surviving mutant; exit 1 below 90 %. Nightly, not part of `make test`.
mutation: venv
	$(PY) ci/mutation.py

doctor: venv
	$(BH) doctor

reap: venv
	$(BH) reap

clean:
	-$(BH) reap --purge
	rm -rf $(VENV) artifacts runs .pytest_cache mutants
