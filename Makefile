# The two commands of the README:  `make demo` (main job on the embedded tiny default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-all gpu-check clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev,cpu,farm]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mimic demo --out demo-out

# Two pytest workers (one per core); a test file stays on one worker so its module fixtures
# (one tiny export, one engine build) run once.
# OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning, so two workers' torch
# threads do not steal each other's cores (scheduling only: results are unchanged).
test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -n 2 --dist loadfile -m "not slow and not gpu" tests

test-all: $(STAMP)
	$(PY) -m pytest -q tests

# The one device check (README): every GPU test this machine can run + a torch CUDA UNet benchmark,
# one report in gpu-check/ (gpu_check.json, gpu_check.md); "no GPU" and exit 0 without one. It needs
# neither the venv nor a pip install (the script imports this checkout through a temporary symlink),
# so it runs on a bare GPU machine: `make gpu-check [GPU_PYTHON=python3] [EXTRA=dir-of-unpacked-packages]`.
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --out gpu-check $(if $(EXTRA),--extra-path $(EXTRA))

clean:
	rm -rf $(VENV) demo-out build *.egg-info
