# headless-wan: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp names the requirement files' hash, so changing a pin re-runs the install; otherwise setup is instant.
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup lint test demo demo-narrated bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-test.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .   # entry points: headless-wan, headless-add-task
	@# speech fallback engine (OS package): `apt-get install espeak-ng` (root), or install it by hand
	@command -v espeak-ng >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq espeak-ng; } \
		|| echo "WARNING: espeak-ng missing: run 'sudo apt-get install espeak-ng' (speech tasks need it)"
	@rm -f $(VENV)/.installed-*
	@touch $@

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/python samples/run_demo.py

demo-narrated: setup
	$(BIN)/python samples/run_narrated_demo.py

bench: setup
	$(BIN)/python bench/queue_bench.py

clean:
	rm -rf demo/ .pytest_cache .cache
