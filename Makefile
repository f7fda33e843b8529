# Two entry points for a fresh machine: `make serve` and `make test`. Both create the virtual
# environment and install what they need (pinned by constraints.txt, apt packages where needed).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MLSERVER_VENV ?= .venv-mlserver
MLSERVER_STAMP := $(MLSERVER_VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TEST_APT := dataset-fashion-mnist
BROWSER_APT := chromium
BENCH_APT := wrk nghttp2-client
HOST ?= 127.0.0.1
PORT ?= 8000
ARCH ?= fashion_cnn
EPOCHS ?=

.PHONY: install serve test lint format train bench reliability docker-test clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[cpu,openvino,quantize,dev]'
	$(BIN)/pip install -q --no-deps -c constraints.txt tensorflow-serving-api
	touch $@

install: $(STAMP)

define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; \
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi
endef

## serve the bundled models on $(HOST):$(PORT)
serve: install
	CNN_HOST=$(HOST) CNN_PORT=$(PORT) $(BIN)/python -m service

## lint and run the test suite (the command CI runs)
test: install
	$(call apt_install,$(TEST_APT) $(BROWSER_APT))
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not reliability_slow"

## the whole reliability suite: fuzzing, bad-input corpus, 60 s soak, overload, SIGTERM, broken models
reliability: install
	$(call apt_install,$(TEST_APT))
	$(BIN)/python -m pytest tests/reliability

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## train and export a model (ARCH=fashion_cnn|fashion_resnet|lenet5|depthpool_cnn; EPOCHS=N overrides its recipe)
train: install
	$(call apt_install,$(TEST_APT))
	$(BIN)/python -m models.train --arch $(ARCH) $(if $(EPOCHS),--epochs $(EPOCHS))

## throughput/latency: in-process limits vs this service vs MLServer and LitServe on its engine, and a naive server
bench: install $(MLSERVER_STAMP)
	$(call apt_install,$(TEST_APT) $(BENCH_APT))
	$(BIN)/pip install -q -c constraints.txt -e '.[cpu,openvino,quantize,dev,bench]'
	$(BIN)/python -m bench.run --mlserver $(MLSERVER_VENV)/bin/mlserver

# MLServer pins FastAPI, Starlette and uvloop versions of its own: it gets a venv of its own.
$(MLSERVER_STAMP): bench/mlserver-constraints.txt
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install -q -c bench/mlserver-constraints.txt mlserver uvloop openvino
	touch $@

## build the CPU image, run it, check a real prediction, feature maps and the summary, remove it
docker-test:
	bash docker/smoke-test.sh

clean:
	rm -rf $(VENV) $(MLSERVER_VENV) .pytest_cache .ruff_cache .checkpoints
