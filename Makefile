# bnstudy: every target creates the virtual environment and installs what it needs by itself.
#   make EXPERIMENT [SEED=1 | SEEDS="0 1 2"] [PRESET=smoke|quick|long|paper] [ARMS="a b"] [DEVICE=auto|cpu|cuda] [RESULTS=dir] [DATA=dir]
#   make all [SEEDS="0 1 2"]  every experiment, then the report;  make report  the report alone
#   make bench [E2E=1]  costs as ratios (E2E=1 also times the whole quick noisy-bn)
#   make lint | test [WORKERS=n] | test-gpu [NOVENV=1]  (WORKERS: test processes, default one a core up to 4; NOVENV=1: the system python3 with PYTHONPATH=., as on a GPU image without network)
#   make gpu-paper NOVENV=1 [MINUTES=8]  a GPU lease's last call: the paper preset's runs side by side (docs/gpu.md)
#   make crosscheck  our Hessian probes against curvlinops, hessian-eigenthings and PyHessian (own venv: .venv-peers)
PYTHON  ?= python3
VENV    ?= .venv
SEED    ?= 0
SEEDS   ?= $(SEED)
PRESET  ?= quick
WORKERS ?= auto
DEVICE  ?= auto
RESULTS ?= results
LAUNCHER ?= local
ARMS    ?=
# Folder holding cifar-10-batches-py/: $BNSTUDY_DATA if set, else data/
DATA    ?= $(if $(BNSTUDY_DATA),$(BNSTUDY_DATA),data)
# A folder holding a local copy of the CIFAR-10 archive and its unpack.sh, where your site has one: $BNSTUDY_CIFAR_COPY,
# else the one this project's machines keep beside the checkout (no network there); else the official download
CIFAR_COPY ?= $(or $(BNSTUDY_CIFAR_COPY),$(wildcard ../shared/data/cifar10))

BIN      := $(VENV)/bin
BNSTUDY  := $(BIN)/bnstudy
STAMP    := $(VENV)/.installed
RUN_ARGS  = --preset $(PRESET) --seeds $(SEEDS) --device $(DEVICE) --results-dir $(RESULTS) --data-dir $(DATA) \
            --launcher $(LAUNCHER) $(if $(ARMS),--arms $(ARMS))

# The experiments are the files experiments/*.toml (noisy_bn.toml: make noisy-bn); experiments/families/*.toml
# hold what a family of them shares and are no experiments.
EXPERIMENTS := $(sort $(subst _,-,$(basename $(notdir $(wildcard experiments/*.toml)))))
RUNS        := $(addprefix run-,$(EXPERIMENTS))
# `with = ["lp-norm-dln"]` in lp_norm.toml: make lp-norm makes lp-norm-dln as well. Read as pairs
# lp-norm:lp-norm-dln with tomllib (Python 3.11 or later, as the venv needs anyway); no venv needed.
EXPERIMENTS_WITH := $(shell "$(PYTHON)" -c 'import pathlib, tomllib; [print(p.stem.replace("_", "-") + ":" + w) for p in sorted(pathlib.Path("experiments").glob("*.toml")) for w in tomllib.loads(p.read_text()).get("with", [])]' 2>/dev/null || echo FAILED)
ifneq ($(filter FAILED,$(EXPERIMENTS_WITH)),)
$(warning cannot read 'with' from experiments/*.toml with $(PYTHON) (3.11 or later needed): each experiment runs alone)
EXPERIMENTS_WITH :=
endif

.PHONY: help install data mnist-data $(EXPERIMENTS) $(RUNS) all report bench plot lint test test-gpu gpu-paper crosscheck clean-venv

help:
	@sed -n '1,7p' Makefile
	@echo "#   EXPERIMENT (experiments/*.toml): $(EXPERIMENTS)"

$(STAMP): pyproject.toml constraints.txt
	"$(PYTHON)" -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,ray]'
	touch $@

install: $(STAMP)

# CIFAR-10: unpack the local copy where CIFAR_COPY names one, else download the official archive.
$(DATA)/cifar-10-batches-py/batches.meta: | $(STAMP)
	@if [ -n "$(CIFAR_COPY)" ] && [ -x "$(CIFAR_COPY)/unpack.sh" ]; then "$(CIFAR_COPY)/unpack.sh" $(DATA); \
	else $(BNSTUDY) data download --data-dir $(DATA); fi

data: $(DATA)/cifar-10-batches-py/batches.meta

# run-noisy-bn, ...: train the experiment's arms x seeds (finished runs are skipped); each on the data it reads
MNIST_RUNS := run-ioffe-mnist
$(filter-out $(MNIST_RUNS),$(RUNS)): run-%: $(STAMP) data
	$(BNSTUDY) run $* $(RUN_ARGS)
$(MNIST_RUNS): run-%: $(STAMP) mnist-data
	$(BNSTUDY) run $* $(RUN_ARGS)

# MNIST (Ioffe & Szegedy's experiment): the four official IDX files, fetched and verified (bnstudy/mnist.py)
mnist-data: $(DATA)/mnist/t10k-labels-idx1-ubyte
$(DATA)/mnist/t10k-labels-idx1-ubyte: | $(STAMP)
	$(BNSTUDY) data download --dataset mnist --data-dir $(DATA)

# make noisy-bn, make landscape, ...: train, then draw the experiment's figures
$(EXPERIMENTS): %: run-%
	$(BNSTUDY) plot $@ --results-dir $(RESULTS)

# the l_p, learning-rate and curvature tracks each have a second part: `with` in their TOML files
$(foreach pair,$(EXPERIMENTS_WITH),$(eval $(firstword $(subst :, ,$(pair))): $(lastword $(subst :, ,$(pair)))))

# every experiment of the preset (finished runs are skipped), then the report, which draws every figure
# (once: plotting each experiment here as well doubled the time of an `all` that had nothing left to train)
all: $(RUNS)
	$(MAKE) report

report: $(STAMP)
	$(BNSTUDY) report --results-dir $(RESULTS) $(if $(filter results,$(RESULTS)),--readme README.md)

bench: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[bench]'
	$(BNSTUDY) bench --device $(DEVICE) --data-dir $(DATA) --results-dir $(RESULTS) $(if $(E2E),--end-to-end)

plot: $(STAMP)
	$(BNSTUDY) plot $(EXPERIMENT) --results-dir $(RESULTS)

# the linter first (pyproject.toml [tool.ruff]): seconds, and a style slip fails before 15 minutes of tests
lint: $(STAMP)
	$(BIN)/ruff check bnstudy tests

# pytest-xdist: one process a core (at most 4: each holds torch and a data set), each test file in one of them, so
# a file's shared runs (module fixtures) are trained once; beside a long run: BNSTUDY_TEST_THREADS=1 make test WORKERS=1
test: lint mnist-data
	BNSTUDY_DATA="$$(cd "$(DATA)" && pwd)" $(BIN)/python -m pytest -q -n $(WORKERS) --maxprocesses 4 --dist loadscope

# the tests marked `cuda` alone (tests/test_cuda.py); each skips, saying why, where torch sees no GPU
ifdef NOVENV
test-gpu:
	PYTHONPATH=. "$(PYTHON)" -m pytest -q -m cuda -rs -p no:cacheprovider tests/test_cuda.py
else
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m cuda -rs tests/test_cuda.py
endif

# A GPU lease's last call (bnstudy/lease.py, docs/gpu.md): CIFAR-10 from the staged parts, the CUDA tests, the device's
# bench rows, paper-figures' runs side by side within MINUTES, all packed into $$OUT. DEVICE and PRESET default to cuda
# and paper here, unless given: `make gpu-paper DEVICE=cpu PRESET=smoke` is the CPU rehearsal the tests run.
MINUTES ?= 8
LEASE    = -m bnstudy.lease paper --minutes $(MINUTES) \
           --device $(if $(filter command line environment,$(origin DEVICE)),$(DEVICE),cuda) \
           --preset $(if $(filter command line environment,$(origin PRESET)),$(PRESET),paper) $(LEASE_ARGS)
ifdef NOVENV
gpu-paper:
	PYTHONPATH=. "$(PYTHON)" $(LEASE)
else
gpu-paper: $(STAMP)
	$(BIN)/python $(LEASE)
endif

# The peer cross-check (bnstudy/crosscheck/, tests/test_peers.py) in a venv of its own: the peers never enter .venv.
# curvlinops-for-pytorch and backpack-for-pytorch require torchvision, and torchvision breaks transformers' imports
# beside this torch: they go in --no-deps, then what they really import (torchvision is not among it).
PEERS_VENV  := .venv-peers
PEERS_BIN   := $(PEERS_VENV)/bin
PEERS_STAMP := $(PEERS_VENV)/.installed
NO_DEPS     := curvlinops-for-pytorch==3.0.1 backpack-for-pytorch==1.7.1
NO_DEPS_USE := einops unfoldNd einconv linear_operator opt-einsum

$(PEERS_STAMP): pyproject.toml constraints.txt
	"$(PYTHON)" -m venv $(PEERS_VENV)
	$(PEERS_BIN)/pip install --quiet --upgrade pip
	$(PEERS_BIN)/pip install --quiet -c constraints.txt torch
	$(PEERS_BIN)/pip install --quiet -c constraints.txt -e '.[dev,peers]'
	$(PEERS_BIN)/pip install --quiet -c constraints.txt --no-deps $(NO_DEPS)
	$(PEERS_BIN)/pip install --quiet -c constraints.txt $(NO_DEPS_USE)
	@# and nothing pulled torchvision in after all:
	@$(PEERS_BIN)/python -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torchvision") and "torchvision!")'
	touch $@

# results/crosscheck/crosscheck.{csv,md} (about 5 minutes at one thread), then the tests of the probes on those models
# (under a minute; at one torch thread too unless BNSTUDY_TEST_THREADS says otherwise: two threads beside other
# work on a 2-core machine ran these tests 10-20 times slower)
crosscheck: $(PEERS_STAMP)
	$(PEERS_BIN)/python -m bnstudy.crosscheck --results-dir $(RESULTS)
	BNSTUDY_TEST_THREADS=$${BNSTUDY_TEST_THREADS:-1} $(PEERS_BIN)/python -m pytest -q tests/test_peers.py

clean-venv:
	rm -rf $(VENV)
