# headless-wan: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp names the requirement files' hash, so changing a pin re-runs the install; otherwise setup is instant.
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup lint test demo bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-test.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .   # entry points: headless-wan, headless-add-task
	@rm -f $(VENV)/.installed-*
	@touch $@

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/python samples/run_demo.py

bench: setup
	$(BIN)/python bench/queue_bench.py

clean:
	rm -rf demo/ .pytest_cache .cache
