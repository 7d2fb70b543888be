# One command each on a fresh machine:  `make serve`  (install + start on the embedded default)
#                                        `make test`   (install + run the whole test suite)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch==2.13.0 is a CPU build from local disk here; set TORCH to your CUDA build elsewhere.
TORCH  ?= torch==2.13.0

.PHONY: setup serve test lint golden bench clean

NODE_DEPS := tests/clients/node/node_modules/.installed

setup: $(VENV)/.installed $(NODE_DEPS)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $@

# The JS realtime client the tests drive (pinned in its package-lock.json); without npm that one
# test is skipped and says so.
$(NODE_DEPS): tests/clients/node/package-lock.json
	@if command -v npm >/dev/null; then cd tests/clients/node && npm ci --no-audit --no-fund --loglevel=error \
	  && touch node_modules/.installed; else echo "npm not found: the JS client test will be skipped (apt install nodejs npm)"; fi

serve: setup
	$(VENV)/bin/omni serve $(ARGS)

test: setup lint
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check omni streaming tests bench
	$(VENV)/bin/ruff format --check omni streaming tests bench   # `ruff format` fixes what it names
	$(VENV)/bin/pyright    # [tool.pyright] in pyproject.toml; its first run fetches pyright's npm package

golden: setup
	$(VENV)/bin/omni golden-check tests/assets/golden/tiny-a
	$(VENV)/bin/omni golden-check tests/assets/golden/tiny-v45-a

clean:
	rm -rf $(VENV) .pytest_cache
