# bertkit: `make demo` runs the main job, `make test` runs the tests. Both set up .venv first.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
BERTKIT := .venv/bin/bertkit
# Data the tests read (every name: ~190 MB of downloads, once): fetched into $$BERTKIT_HOME (default ~/.cache/bertkit), sha256-checked.
TEST_DATA := --all

.PHONY: setup demo test test-slow lint bench fetch-test-data tf-env optimum-env clean

setup: .venv/.installed

# torch is pinned and installed first: a free choice lets pip pull a multi-GB CUDA build.
.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $@

fetch-test-data: setup
	$(BERTKIT) fetch $(TEST_DATA)

demo: setup
	$(PY) -m bertkit.demo

# TensorFlow (CPU) in its own environment, used only by the tests that check `bertkit convert` against
# checkpoints TensorFlow itself writes and reads. Where it cannot be installed those tests skip (CI: fail).
tf-env: .venv-tf/.installed

.venv-tf/.installed:
	python3 -m venv .venv-tf
	.venv-tf/bin/pip install -q tensorflow-cpu==2.21.0 numpy && touch $@ || \
		echo "tensorflow-cpu could not be installed: the TensorFlow conversion tests will be skipped"

# ruff (lint and format) and mypy over src/ first: seconds, and a failure says exactly what to fix.
lint: setup
	.venv/bin/ruff check src tests
	.venv/bin/ruff format --check src tests
	.venv/bin/mypy src/bertkit

test: lint fetch-test-data tf-env
	$(PY) -m pytest -q

test-slow: fetch-test-data
	$(PY) -m pytest -q -m slow

# optimum's ONNX Runtime models for bench/speed.py's peer rows, in their own environment: optimum-onnx
# pins transformers < 4.58, older than the tests'. Where it cannot be installed those rows are left out.
optimum-env: .venv-optimum/.installed

.venv-optimum/.installed:
	python3 -m venv .venv-optimum
	.venv-optimum/bin/pip install -q torch==2.13.0 && \
		.venv-optimum/bin/pip install -q 'optimum-onnx[onnxruntime]==0.1.0' && touch $@ || \
		echo "optimum-onnx could not be installed: bench/speed.py leaves out optimum's rows"

# The speed table against transformers, CTranslate2 and optimum (about 22 minutes on 2 cores):
# bench/results.md; then a whole MR epoch against transformers' Trainer (about 10 minutes), printed.
bench: fetch-test-data optimum-env
	$(PIP) install -q -e '.[bench]'
	$(PY) bench/speed.py
	$(PY) bench/epoch.py

clean:
	rm -rf .venv .venv-tf .venv-optimum build src/*.egg-info
