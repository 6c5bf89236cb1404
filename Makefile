# Two commands for a new user: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_HOME ?= $(CURDIR)/demo_data

.PHONY: demo test lint venv clean-demo

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from TORCH_SPEC, so the package's own `torch` requirement is already met.
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,demo]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

# Style (ruff.toml: line length 120, import order, unused names); .ci/run runs it before the tests.
lint: $(STAMP)
	$(PY) -m ruff check .

demo: $(STAMP)
	MSGLDM_HOME=$(DEMO_HOME) $(PY) -m msgldm_auto.cli.run_demo

clean-demo:
	rm -rf $(DEMO_HOME)
