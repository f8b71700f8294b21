# The two commands of the README:  `make demo` (main job on the embedded tiny default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-all clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mimic demo --out demo-out

# Two pytest workers (one per core); a test file stays on one worker so its module fixtures
# (one tiny export, one engine build) run once.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow and not gpu" tests

test-all: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) demo-out build *.egg-info
