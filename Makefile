# One-command setup, tests and reproductions. `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
PYTHON := $(VENV)/bin/python
PAPERS := gem infnet rcar retrofpn
QUICK ?= 0
QUICK_FLAG := $(if $(filter 1 yes true,$(QUICK)),--quick,)
# The install stamp is keyed on pyproject.toml's content: `make setup` is a no-op until it changes.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml 2>/dev/null | cut -c1-16)

.PHONY: help setup syslibs test test-all lint format reproduce clean \
	$(addprefix data-,$(PAPERS)) $(addprefix reproduce-,$(PAPERS)) $(addprefix bench-,$(PAPERS)) parity-infnet

help:
	@echo "make setup            create .venv and install everything (idempotent)"
	@echo "make test             lint + fast test suite      make test-all   adds @slow tests"
	@echo "make lint | format    ruff check | ruff format"
	@echo "make data-<paper>     prepare the embedded data   (papers: $(PAPERS))"
	@echo "make reproduce-<paper> [QUICK=1]   train, evaluate, write results/<paper>/report.md"
	@echo "make reproduce [QUICK=1]           every implemented paper"
	@echo "make bench-<paper> [QUICK=1]       performance benchmark -> results/bench/"
	@echo "make parity-infnet [QUICK=1]       infnet's baselines beside torch-rechub's -> results/infnet/parity.md"
	@echo "make clean            remove runs/, caches and __pycache__ (keeps .venv and data/)"
	@echo "QUICK=1               a few-minute run; its report goes under runs/<paper>/, never over results/"

setup: syslibs $(STAMP)

# open3d links against libusb-1.0 at import time.
syslibs:
	@if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "setup: installing the system library libusb-1.0-0 (needed by open3d)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null; \
	  else \
	    echo "setup: open3d needs the system library libusb-1.0-0; run: sudo apt-get update && sudo apt-get install -y libusb-1.0-0"; \
	    exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PYTHON) -m pytest -q -m "not slow" tests

test-all: lint
	$(PYTHON) -m pytest -q tests

# Paper targets: each package provides prepare.py / reproduce.py / bench.py once implemented.
define paper_module
	@test -f $(1)/$(2).py || { echo "make: $(1) has no $(2) step yet: the $(1) package is not implemented (see $(1)/README.md)"; exit 2; }
	$(PYTHON) -m $(1).$(2) $(3)
endef

$(addprefix data-,$(PAPERS)): data-%: setup
	$(call paper_module,$*,prepare,)

$(addprefix reproduce-,$(PAPERS)): reproduce-%: setup
	$(call paper_module,$*,reproduce,$(QUICK_FLAG))

$(addprefix bench-,$(PAPERS)): bench-%: setup
	$(call paper_module,$*,bench,$(QUICK_FLAG))

parity-infnet: setup
	$(call paper_module,infnet,parity,$(QUICK_FLAG))

# Runs every implemented paper, then fails naming the ones that are not implemented yet.
reproduce: setup
	@missing=""; for p in $(PAPERS); do \
	  if [ -f $$p/reproduce.py ]; then $(MAKE) --no-print-directory reproduce-$$p QUICK=$(QUICK) || exit $$?; \
	  else missing="$$missing $$p"; fi; \
	done; \
	if [ -n "$$missing" ]; then echo "make: not implemented yet, no reproduction:$$missing"; exit 2; fi

clean:
	rm -rf runs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
