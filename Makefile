# One command each on a fresh machine:  `make serve`  (install + start on the embedded default)
#                                        `make test`   (install + run the whole test suite)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch==2.13.0 is a CPU build from local disk here; set TORCH to your CUDA build elsewhere.
TORCH  ?= torch==2.13.0

.PHONY: setup serve test golden bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $@

serve: setup
	$(VENV)/bin/omni serve $(ARGS)

test: setup
	$(PY) -m pytest -q tests

golden: setup
	$(VENV)/bin/omni golden-check tests/assets/golden/tiny-a

clean:
	rm -rf $(VENV) .pytest_cache
