# Every target creates .venv (Python 3.11+) and installs jaxpose into it when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_WORKDIR ?= runs/demo

.PHONY: demo test bench clean

$(BIN)/jaxpose: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

# Builds synthetic_heads (cached), trains the default experiment, evaluates, prints the MAE table.
demo: $(BIN)/jaxpose
	$(BIN)/jaxpose train --config experiments/synthetic_hopenet.py --workdir $(DEMO_WORKDIR)

test: $(BIN)/jaxpose
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
