# The two commands a newcomer needs: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BACKENDS := $(patsubst %/pyproject.toml,%,$(wildcard backends/*/pyproject.toml))

.PHONY: dev serve test lint protos

# Development install: the service, its tooling and every backend, editable, in $(VENV).
dev: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(addsuffix /pyproject.toml,$(BACKENDS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(addprefix -e ,$(BACKENDS))
	touch $@

serve: dev
	$(BIN)/stovepipe serve

test: dev
	$(BIN)/pytest

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy stovepipe contract_tests tests messaging_tests benchmarks scripts
	for backend in $(BACKENDS); do $(BIN)/mypy $$backend || exit 1; done

protos: dev
	$(BIN)/python scripts/generate_protos.py
