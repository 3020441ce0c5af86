# `make demo` and `make test` set everything up on first use (a virtual environment in .venv).
# `make demo` installs only what the model and the examples need; `make test` adds the test extras
# (pytest, ruff, TensorFlow to write test checkpoints, the book's own code, TRL, the serving deps).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
TEST_EXTRAS ?= dev,test-tf,serve,trl
# The book's own code, the reference in tests. Its package pins numpy<2.1 and pulls full TensorFlow and
# JupyterLab; the modules the tests import need only torch, tiktoken, numpy, pandas and matplotlib.
BOOK_CODE := llms-from-scratch==1.0.19

# A machine with an NVIDIA driver keeps PyPI's CUDA build of torch; any other machine gets the
# CPU build (2.13.0, the version the suite is tested with). On a CPU-only Linux machine outside
# this project's workplace, add TORCH_INDEX=https://download.pytorch.org/whl/cpu to avoid the
# multi-GB CUDA wheels.
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_SPEC ?= $(if $(HAS_CUDA),torch>=2.4,torch==2.13.0)
TORCH_INDEX ?=

# Offline machines of this project: tokenizer caches and data sets from ../shared.
SHARED_ENV := $(wildcard ../shared/offline/env.sh)
RUN := $(if $(SHARED_ENV),. $(abspath $(SHARED_ENV)) &&) PYTHONUNBUFFERED=1

.PHONY: install install-test demo test test-all lint bench clean

install: $(STAMP)
install-test: $(TEST_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e .
	touch $@

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[$(TEST_EXTRAS)]'
	$(PY) -m pip install -q --no-deps $(BOOK_CODE)
	touch $@

demo: $(STAMP)
	$(RUN) $(PY) examples/pretrain.py --config_name tiny $${GPT_SCRATCH_SHARED_DATA:+--train_file "$$GPT_SCRATCH_SHARED_DATA/the-verdict/the-verdict.txt"} --output_dir out/pretrain --overwrite_output_dir && $(RUN) $(PY) examples/generate.py out/pretrain --max_new_tokens 30

test: $(TEST_STAMP)
	$(RUN) $(PY) -m pytest -q

test-all: $(TEST_STAMP)
	$(RUN) $(PY) -m pytest -q -m ""

lint: $(TEST_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(TEST_STAMP)
	$(RUN) $(PY) benchmarks/bench_cpu.py

clean:
	rm -rf $(VENV) out
