# The README's two commands: `make demo` (set up + the main job) and `make test` (set up + the tests).
VENV := .venv
STAMP := $(VENV)/.setup-done

.PHONY: setup demo test lint bench mutation

setup: $(STAMP)

$(STAMP): pyproject.toml operator/pyproject.toml inference_server/pyproject.toml trainer_image/pyproject.toml scripts/setup.sh scripts/install_k8s_tools.py
	bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/vft demo

test: lint
	$(VENV)/bin/pytest

# ruff (lint and format), the type checker over every source package, the import contracts (pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

bench: setup
	$(VENV)/bin/python -m bench.train_step
	$(VENV)/bin/python -m bench.train_memory --json --write-docs
	$(VENV)/bin/python -m bench.inference
	$(VENV)/bin/python -m bench.api
	$(VENV)/bin/python -m bench.operator
	$(VENV)/bin/python -m bench.streaming --write-docs
	$(VENV)/bin/python -m bench.engine --write-docs
	$(VENV)/bin/python -m bench.concurrency --write-docs
	$(VENV)/bin/python -m bench.longform --write-docs
	$(VENV)/bin/python -m bench.chapter_assembly --write-docs
	$(VENV)/bin/python -m bench.lora --write-docs

# Mutation testing over the safety-critical modules (slow; not part of `make test`): writes docs/testing.md.
mutation: setup
	$(VENV)/bin/python scripts/mutation.py
