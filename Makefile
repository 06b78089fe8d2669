# headless-wan: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp names the requirement files' hash, so changing a pin re-runs the install; otherwise setup is instant.
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup lint test demo demo-narrated bench serve clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-test.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .   # entry points: headless-wan, headless-add-task
	@# speech fallback engine (OS package): `apt-get install espeak-ng` (root), or install it by hand
	@command -v espeak-ng >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq espeak-ng; } \
		|| echo "WARNING: espeak-ng missing: run 'sudo apt-get install espeak-ng' (speech tasks need it)"
	@# the dashboard test's browser (Playwright's own download is unreachable): Debian's headless Chromium
	@command -v chromium-headless-shell >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium-headless-shell; } \
		|| echo "WARNING: chromium-headless-shell missing: run 'sudo apt-get install chromium-headless-shell' (tests/test_api_dashboard.py needs it)"
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

# The HTTP API on loopback (API keys: `add_task.py keys create --project P`); SERVE_ARGS=--no-auth to skip keys.
serve: setup
	$(BIN)/python serve.py --host 127.0.0.1 --port 8000 $(SERVE_ARGS)

clean:
	rm -rf demo/ .pytest_cache .cache
