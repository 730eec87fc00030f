# Every target creates .venv (Python 3.11+) and installs jaxpose into it when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_WORKDIR ?= runs/demo
# The converter tests compare against PyTorch (CPU build; an optional extra for users).
TEST_TORCH ?= torch==2.13.0

.PHONY: demo test clean

$(BIN)/jaxpose: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.torch: $(BIN)/jaxpose
	$(BIN)/pip install --quiet "$(TEST_TORCH)"
	touch $@

# Builds synthetic_heads (cached), trains the default experiment, evaluates, prints the MAE table.
demo: $(BIN)/jaxpose
	$(BIN)/jaxpose train --config experiments/synthetic_hopenet.py --workdir $(DEMO_WORKDIR)

test: $(BIN)/jaxpose $(VENV)/.torch
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
