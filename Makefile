# The two commands a newcomer types: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test venv clean

$(BIN)/ice: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/ice

venv: $(BIN)/ice

demo: venv
	$(BIN)/ice demo

test: venv  # the lint first: ruff's config is in pyproject.toml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

clean:  # the environment and the demo's own runs; runs of your images stay
	rm -rf $(VENV) runs/demo runs/digits
