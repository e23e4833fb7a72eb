# One-command entry points. Everything runs inside the project's .venv.
#   make reproduce            the default run (config/config.yaml), offline, CPU
#   make reproduce PROFILE=config/fashion-mnist.yaml   an overlay profile
#   make test                 pytest (unit tests + a tiny end-to-end pipeline run)
#   make lint                 snakemake --lint, snakefmt, ruff
#   make tune                 hyper-parameter search on the validation split
#   make bench                throughput and overheads on this machine -> results/bench/summary.md
#   make push / make pull     share data, checkpoints and metrics through the DVC remote
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
CORES ?= all
PROFILE ?=
SNAKEMAKE := snakemake --workflow-profile workflow/profiles/default --cores $(CORES) $(if $(PROFILE),--configfile $(PROFILE))

.PHONY: venv dev reproduce test lint report bench tune push pull verify clean-results

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.installed-dev

reproduce: venv
	$(SNAKEMAKE)

report: venv
	$(SNAKEMAKE) --report results/report.html

bench: venv
	python -m unlearn_da bench --out results/bench/summary.md --threads 2

tune: venv
	$(SNAKEMAKE) tune

push: venv
	dvc push

# pull, then check every pulled artifact against the current config and code, and
# only then mark the outputs current for Snakemake (see README, "Sharing artifacts")
pull: venv
	dvc pull
	dvc status
	$(MAKE) --no-print-directory verify
	$(SNAKEMAKE) --touch --forceall

verify: venv
	python -m unlearn_da verify $(if $(PROFILE),--configfile $(PROFILE))

test: dev
	$(BIN)/python -m pytest -q

lint: dev
	snakemake --lint
	snakefmt --check Snakefile workflow/
	ruff check src tests

clean-results:
	rm -rf results .snakemake
