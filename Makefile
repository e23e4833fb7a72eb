# One-command entry points. Everything runs inside the project's .venv.
#   make reproduce            the default run (config/config.yaml), offline, CPU, through its DVC
#                             stage: dvc.lock records every output, the HTML report is written
#   make reproduce PROFILE=config/fashion-mnist.yaml   an overlay profile (its own results folder)
#   make test                 pytest (unit tests + a tiny end-to-end pipeline run, DVC via local + S3 remotes)
#   make test-paper           the CIFAR-10 profile's ResNet-18 path on synthetic CIFAR, to one table (CPU, minutes)
#   make test-remotes         the DVC round trips through S3 (moto) and SSH (a temporary sshd; installs openssh-server)
#   make test-slurm           the tiny config on a private single-node SLURM cluster (root, Debian)
#   make lint                 snakemake --lint, snakefmt, ruff
#   make tune                 hyper-parameter search on the validation split
#   make da-energy            the DA metric's energy rule, chosen on the tuning seed's training features
#   make bench                throughput and overheads on this machine -> results/bench/summary.md
#   make smoke-paper          the CIFAR-10/100 paper profiles on small synthetic CIFAR, every rule, CPU
#   make gpu-check            on a CUDA machine, minutes: the paper path's stages + what decides the tables' time
#   make gpu-check-full       the same at length: every scenario, 8 processes, compile on and off
#                             (DEVICE=cpu to try; GPU_CHECK_ARGS=--measure-only for the measurements alone)
#   make push / make pull     share data, checkpoints and metrics through the DVC remote
#   make check-reproduction   compare a finished run with its shipped expected results (expected/<run>.json)
#   make expected-results     write a finished run's expected results (after re-making a run on purpose)
#   make readme-tables        rewrite the result tables of README.md and docs/ (and their figure) from expected/*.json
#   make docs                 the documentation (docs/) as a site in site/ (MkDocs, strict: a broken link fails)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
CORES ?= all
PROFILE ?=
# params.yaml (DVC's parameters file: `dvc exp run -S ++key=value` writes there) is read last, after the
# profile's overlays; the DVC stage of a run names the profile only (STAGEFILES) and tracks params.yaml
PARAMS_FILE := $(wildcard params.yaml)
STAGEFILES := $(if $(strip $(PROFILE)),--configfile $(PROFILE))
CONFIGFILES := $(if $(strip $(PROFILE) $(PARAMS_FILE)),--configfile $(PROFILE) $(PARAMS_FILE))
# Snakemake evaluates a config file that sets __use_yte__ as a YTE template (Python) before the
# Snakefile can validate it: every target that hands a profile to Snakemake reads it first with the
# project's safe loader (python -m unlearn_da gpu-slots validates the config first), which refuses that and
# every other bad value. The same command counts the GPU pool's slots (devices x jobs_per_device), which
# bound Snakemake's gpu resource: no more GPU jobs start than the pool has places for.
CHECK_CONFIG := gpu_slots=$$(python -m unlearn_da gpu-slots $(CONFIGFILES)) &&
# make runs a recipe line that names $(MAKE) even under -n (for recursive makes): the recipes below call
# it through SUBMAKE, so that `make -n <target>` prints and changes nothing (no dvc.yaml stage, no dvc repro)
SUBMAKE = $(MAKE)
# Snakemake's scheduler looks up the size of every input of every ready job at each of its rounds (several
# per finished job): with the 230 metrics jobs of the default run ready at once that was most of its own CPU.
# It considers a random sample of 4 jobs per core instead (at least 8), which still fills every core: a round
# starts at most as many jobs as there are free cores. Which ready job starts first changes no result.
NCORES = $(if $(filter all,$(CORES)),$$(nproc),$(CORES))
SNAKEMAKE := $(CHECK_CONFIG) snakemake --workflow-profile workflow/profiles/default --cores $(CORES) \
	--scheduler-subsample $$(( 4 * $(NCORES) > 8 ? 4 * $(NCORES) : 8 )) --resources gpu=$$gpu_slots $(CONFIGFILES)

.PHONY: venv torch dev reproduce pipeline check-reproduction expected-results readme-tables docs test test-paper test-remotes test-slurm test-cpu-models test-compile lint report bench tune push pull verify clean-results smoke-paper gpu-check gpu-check-full da-energy

# TORCH_CUDA=cu126 (cu128, ...): torch and torchvision at the pinned versions, built for that CUDA, from
# PyTorch's own index: the PyPI wheel is the CUDA 13.0 build (NVIDIA driver 580 or later); a 12.x build runs on
# driver 525 or later (docs/gpu.md). `make venv TORCH_CUDA=cu126` in a fresh clone, `make torch TORCH_CUDA=cu126`
# to switch an existing .venv.
TORCH_CUDA ?=
TORCH_INSTALL = $(BIN)/python -m pip install --quiet -c constraints.txt \
	--index-url https://download.pytorch.org/whl/$(TORCH_CUDA) --extra-index-url https://pypi.org/simple

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(strip $(TORCH_CUDA)),$(TORCH_INSTALL) torch torchvision)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

torch:
	@test -n "$(strip $(TORCH_CUDA))" || { echo "make torch needs TORCH_CUDA, e.g. TORCH_CUDA=cu126 (docs/gpu.md)" >&2; exit 2; }
	@test -x $(BIN)/python || { echo "no $(VENV) yet: make venv TORCH_CUDA=$(TORCH_CUDA) makes one with that build" >&2; exit 2; }
	$(TORCH_INSTALL) --force-reinstall --no-deps torch torchvision
	python -c "import torch; print('torch', torch.__version__, 'built for CUDA', torch.version.cuda)"

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

$(VENV)/.installed-remotes: $(VENV)/.installed-dev
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,s3,ssh]'
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.installed-dev

# The run's DVC stage (dvc.yaml, named after the run; added the first time) runs `make pipeline`
# and records the outputs in dvc.lock; an overlay that writes into another stage's folder runs
# `make pipeline` directly (with a note).
reproduce: venv
	@stage=$$(python -m unlearn_da dvc-stage $(STAGEFILES)) || exit $$?; \
	if [ -n "$$stage" ]; then echo "dvc repro $$stage"; dvc repro "$$stage"; \
	else $(SUBMAKE) --no-print-directory pipeline; fi

# Snakemake, then the HTML report when a result is newer than it (written aside, then moved).
# The command of the DVC stages; it expects the venv (make reproduce builds it first). Snakemake's
# records of the run's jobs travel in results/<run>/.snakemake-records (restored where .snakemake/
# lacks them, saved after): a copy of the run (dvc exp run --temp/--queue, a clone after dvc pull)
# then reruns only what changed, not every job whose files have new times.
pipeline:
	python -m unlearn_da snakemake-records restore $(CONFIGFILES)
	$(SNAKEMAKE)
	@run=$$(python -m unlearn_da run-name $(CONFIGFILES)) && out=results/$$run/report.html && \
	if [ -e $$out ] && [ -z "$$(find results/$$run -path results/$$run/.snakemake-records -prune -o -type f \
	  -newer $$out -print -quit)" ]; then \
	  echo "$$out is up to date"; \
	else echo "writing $$out" && $(SNAKEMAKE) --report results/$$run/.report.tmp.html \
	  && mv results/$$run/.report.tmp.html $$out; fi
	python -m unlearn_da snakemake-records save $(CONFIGFILES)

report: venv
	@run=$$(python -m unlearn_da run-name $(CONFIGFILES)) && \
	$(SNAKEMAKE) --report results/$$run/.report.tmp.html && mv results/$$run/.report.tmp.html results/$$run/report.html

bench: venv
	python -m unlearn_da bench --out results/bench/summary.md --threads 2

smoke-paper: venv
	python -m unlearn_da smoke-paper --workdir results/smoke-paper --cores $(NCORES)

# runs with the machine's own python3 when there is no venv (GPU machines come with torch, no Snakemake)
DEVICE ?= cuda
GPU_CHECK_ARGS ?=
GPU_CHECK = PYTHONPATH=src $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m unlearn_da gpu-check --device $(DEVICE)
gpu-check:
	$(GPU_CHECK) --part quick --workdir results/gpu-check $(GPU_CHECK_ARGS)
gpu-check-full:
	$(GPU_CHECK) --part full --workdir results/gpu-check-full $(GPU_CHECK_ARGS)

tune: venv
	$(SNAKEMAKE) -- tune

da-energy: venv
	$(SNAKEMAKE) -- da_energy

push: venv
	dvc push

# pull, then check every pulled artifact against the current config and code, and
# only then mark the outputs current for Snakemake (docs/sharing.md)
pull: venv
	@stage=$$(python -m unlearn_da dvc-stage --no-add $(STAGEFILES)) || exit $$?; dvc pull $$stage
	dvc status
	$(SUBMAKE) --no-print-directory verify
	$(SNAKEMAKE) --touch --forceall

verify: venv
	python -m unlearn_da verify $(CONFIGFILES)

# the shipped expected results (checksums and per-seed metrics, made with portable CPU kernels)
check-reproduction: venv
	python -m unlearn_da check-reproduction --configfile $(PROFILE)

expected-results: venv
	python -m unlearn_da expected-results --configfile $(PROFILE)

readme-tables: venv
	python -m unlearn_da readme-tables

docs: dev
	mkdocs build --strict

# tests marked slurm (a real SLURM cluster), remotes (DVC remotes), compile (Inductor) and paper
# (ResNet-18 on the CPU) have their own targets. The tests run in TEST_WORKERS processes
# (pytest-xdist; a test module stays in one, so its fixtures are made once; the tiny run that many
# modules read is made once for all; the modules are taken in conftest.FIRST_MODULES' order).
TEST_WORKERS ?= 2
test: dev
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder \
	  -m "not remotes and not slurm and not compile and not paper"

# the CIFAR-10 profile's path (synthetic CIFAR-10 in the real form, ResNet-18 with crop+flip) through
# Snakemake to one table: a cut-down `make smoke-paper`, minutes of ResNet-18 on the CPU
test-paper: dev
	$(BIN)/python -m pytest -q -m paper tests/test_paper_path.py

# DVC push/pull through a real S3 (moto's server) and SSH (OpenSSH's sshd) remote, both on
# 127.0.0.1 with their state in temp dirs; prints the round-trip times and sizes.
# The tests run Debian's /usr/sbin/sshd: installed with apt-get when missing (as root, or
# through sudo; SSHD=... names another file to test for).
SSHD ?= /usr/sbin/sshd
test-remotes: $(VENV)/.installed-remotes
	@test -x $(SSHD) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends openssh-server; }
	$(BIN)/python -m pytest -q -rP --durations=10 tests/test_dvc.py -k remote_round_trip

# Debian's SLURM, its accounting database and MUNGE, installed when missing; the test starts
# its own cluster in a temporary directory on 127.0.0.1 and stops it (tests/support/slurm_cluster.py)
SLURM_DEBS := slurm-wlm slurmdbd munge mariadb-server iproute2
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
test-slurm: dev
	@missing=""; for p in $(SLURM_DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(BIN)/python -m pytest -q -s -m slurm tests/test_slurm.py

# precision.compile: Inductor compiles C++ on the CPU (minutes); its own target
test-compile: dev
	$(BIN)/python -m pytest -q -s -m compile tests/test_compile.py

# tests/test_cpu_models.py runs the optimisers on an emulated Intel and AMD CPU (qemu's user mode);
# `make test` runs it where qemu-x86_64 is installed, skips it elsewhere; this target installs it
test-cpu-models: dev
	@command -v qemu-x86_64 >/dev/null || { echo "apt-get install qemu-user"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user; }
	$(BIN)/python -m pytest -q -rs tests/test_cpu_models.py

lint: dev
	snakemake --lint
	snakefmt --check Snakefile workflow/
	ruff check src tests

clean-results:
	rm -rf results .snakemake
