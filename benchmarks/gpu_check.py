"""The one device check: ``make gpu-check`` (or ``python3 benchmarks/gpu_check.py --out DIR``).

Built for the bare GPU image we are lent (Python 3.12, torch + CUDA, onnxruntime CPU build, pytest;
no PyAV, diffusers, TensorRT, Ray, Polygraphy), for about 15 minutes of device time in all:

* **Carried wheels.** ``make gpu-wheels`` (here, with network) downloads the PyAV and diffusers wheels
  for the GPU machine's Python into the git-ignored ``.whl/`` (about 42 MB; at most 64 MiB of ignored
  files travel with the tree). The check installs those it finds into a temporary folder (only the
  packages that are not importable already) and works without them too, measuring what it can.
* **Steps in their own processes.** Each step runs in a subprocess with its own time limit and, the
  moment it ends, appends one JSON line to ``DIR/steps.jsonl`` (step, status, seconds, figures,
  error); a step writes its figures as it goes, so even a step cut by its limit returns what it had.
  A run stopped at any point keeps every line before it. ``DIR/gpu_check.md`` is written from those
  lines at the end (``--report DIR`` rewrites it from a ``steps.jsonl`` alone).
* **Order:** cheapest and most decisive first (see ``PLAN``; the expected seconds on one H100 are
  in the README). The whole check fits ``--budget-s`` (540 s); a step that no longer fits is
  recorded as skipped.
* **Exit status:** 0 without a GPU ("no GPU" printed, nothing written); with a GPU, 2 when nothing
  was measured, 1 when a step failed, else 0.

``--plan`` prints the plan (what each step needs, whether it can run here) and collects the GPU tests
(one pytest per file, ``--collect-only``) without running anything: how a CPU machine checks that the
check will run on the GPU image (``tests/test_gpu_check.py`` does it with av, diffusers, ray,
polygraphy and tensorrt made unimportable). ``--rehearse`` runs every step even without a GPU (the
GPU steps skip, saying so): how the check's own bookkeeping is tested on a CPU.

It needs neither the venv nor a pip install: run from a copy of the repository (the folder is the
``mimic`` package under another name), it imports that copy through a temporary ``mimic`` symlink
and hands the same path to every subprocess.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: this folder's modules must not shadow top-level ones
BUDGET_S = 540  # the whole check on one H100/H200 (the device tool allows 600 s per command)
HEIGHT, WIDTH = 576, 1024
WHEELS = ROOT / ".whl"
STEPS_FILE = "steps.jsonl"
PACKAGES = ("torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "av", "diffusers", "transformers", "safetensors",
            "huggingface_hub", "opencv-python-headless", "pytest", "pytest-xdist", "typer", "polygraphy", "tensorrt",
            "tensorrt-rtx", "ray", "cuda-python", "torchao", "nvidia-modelopt")
MODULES = ("mimic.spec", "mimic.fingerprint", "mimic.runtime.denoise", "mimic.runtime.parallel", "mimic.runtime.decode",
           "mimic.runtime.pipeline", "mimic.runtime.api", "mimic.runtime.backend_torch", "mimic.runtime.backend_ort",
           "mimic.runtime.backend_trt", "mimic.media.video_reader", "mimic.pose.detector", "mimic.model.loader",
           "mimic.model.unet", "mimic.engine.runner", "mimic.engine.validate", "mimic.farm.farm", "mimic.benchmarks.flops",
           "mimic.runtime.fp8")
GPU_TEST_FILES = ("tests/test_gpu_parallel.py", "tests/test_gpu_path.py", "tests/test_engine_gpu.py", "tests/test_fp8.py")
STREAM_TESTS = ("tests/test_gpu_streams.py", "tests/test_gpu_parallel.py::test_parallel_denoise_on_cuda_equals_one_worker")
# attention at the real 72-frame 576x1024 shapes: (batch, heads, tokens, head dim)
SDPA_SHAPES = {"spatial": (144, 5, 9216, 64), "temporal": (18432, 5, 72, 64), "vae": (8, 1, 9216, 512)}
FP8_FRAMES = (16, 72)  # the fp8 step's UNet windows (fp16 and FP8 side by side in one process)


class Skip(Exception):
    """A step that cannot run here (no GPU, a missing package): recorded as skipped with the reason."""


# ------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    limit_s: int  # its own time limit
    expect_s: int  # expected on one H100 (README)
    needs: tuple[str, ...] = ()  # modules beyond torch; missing -> skipped with the reason
    run: Callable[["Recorder"], None] | None = None  # runs in the step's subprocess
    pytest_targets: tuple[str, ...] = ()  # or: a pytest run (one process per file)


def plan() -> list[Step]:
    return [
        Step("facts", "GPU, driver, versions, TF32/SDPA flags, which mimic modules import", 40, 8, run=step_facts),
        Step("streams", "decode race (defect 4) reproduced and fixed, host syncs per window, cuda:0,cuda:0 = one worker",
             120, 30, pytest_targets=STREAM_TESTS),
        Step("sdpa", "attention kernels at the 72-frame shapes: time, peak memory, kernel", 90, 20, run=step_sdpa),
        Step("unet16", "UNet CFG pair at 16 frames: TFLOP/s vs matmul rate, peak memory, first-call time", 120, 45,
             needs=("diffusers",), run=lambda r: step_unet(r, 16)),
        Step("gpu_tests", "the GPU tests, one pytest per file", 270, 175, pytest_targets=GPU_TEST_FILES),
        Step("unet72", "UNet CFG pair at 72 frames (the released window)", 120, 45, needs=("diffusers",),
             run=lambda r: step_unet(r, 72)),
        Step("fp8", "UNet CFG pair at 16 and 72 frames, fp16 vs FP8 Linear layers (torch._scaled_mm; CC >= 8.9)", 120, 50,
             needs=("diffusers",), run=step_fp8),
        Step("vae_decode", "temporal VAE decode chunk at 576x1024: time, memory, NaN", 90, 25, needs=("diffusers",),
             run=step_vae_decode),
        Step("determinism", "same UNet input in two processes: output hashes (autotuned and deterministic)", 120, 50,
             needs=("diffusers",), run=step_determinism),
        Step("end_to_end", "torch CUDA backend, tiny and toy presets, vs the CPU", 150, 60, needs=("diffusers", "transformers"),
             run=step_end_to_end),
    ]


# ------------------------------------------------------------------------------ process plumbing


def import_mimic(extra: list[str]) -> tuple[Path | None, list[str]]:
    """Make ``import mimic`` give this checkout; returns (shim folder or None, paths for PYTHONPATH)."""
    for p in reversed(extra):
        sys.path.insert(0, str(Path(p).resolve()))
    paths = [str(Path(p).resolve()) for p in extra]
    try:
        import mimic

        if Path(mimic.__file__).resolve().parent == ROOT:
            return None, paths
    except ImportError:
        pass
    for name in [m for m in sys.modules if m == "mimic" or m.startswith("mimic.")]:
        del sys.modules[name]  # a foreign (or blocked) `mimic`: this checkout's wins
    shim = Path(tempfile.mkdtemp(prefix="mimic-shim-"))
    (shim / "mimic").symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(shim))
    importlib.invalidate_caches()
    import mimic  # noqa: F401  (now this checkout)

    return shim, [str(shim), *paths]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def install_wheels(folder: Path) -> tuple[str | None, list[str]]:
    """Unpack the carried wheels whose package is not importable here into a temporary folder;
    returns (folder for PYTHONPATH or None, the wheels installed). Wheels are zip files: unpacking
    is all ``pip install --no-deps --target`` does for these two (pure Python and a manylinux wheel
    with its libraries inside), and it needs no pip on the machine."""
    wheels = sorted(Path(folder).glob("*.whl")) if Path(folder).is_dir() else []
    todo = [w for w in wheels if not _importable(w.name.split("-")[0].lower().replace("-", "_"))]
    if not todo:
        return None, []
    target = Path(tempfile.mkdtemp(prefix="mimic-gpu-wheels-"))
    for w in todo:
        with zipfile.ZipFile(w) as z:
            z.extractall(target)
        for so in target.rglob("*.so*"):
            so.chmod(0o755)  # zip entries lose their mode bits with extractall
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    return str(target), [w.name for w in todo]


def child_env(pythonpath: list[str]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")]).strip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_process(cmd: list[str], env: dict, log: Path, timeout_s: float, cwd: Path = ROOT) -> tuple[int | None, bool]:
    """Run ``cmd`` in its own process group with output to ``log``; (exit code or None, timed out)."""
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=max(1.0, timeout_s)), False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return None, True
        except BaseException:
            _kill_group(proc)
            raise


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def append_line(path: Path, record: dict) -> None:
    """One JSON line, flushed and synced: a run killed right after keeps it."""
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_lines(path: Path) -> list[dict]:
    records = []
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by a kill: the ones before it stand
    return records


class Recorder:
    """A step's figures, rewritten to its JSON file after every ``put`` (a step cut by its time
    limit still returns what it measured)."""

    def __init__(self, path: Path):
        self.path, self.figures = Path(path), {}

    def put(self, key: str, value) -> None:
        self.figures[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.figures, default=str))
        os.replace(tmp, self.path)


# ----------------------------------------------------------------------------------- pytest steps


def pytest_runs(step: Step, out: Path, env: dict, timeout_s: float) -> dict:
    """One pytest per target with ``--continue-on-collection-errors`` and a junit file each."""
    if not _importable("pytest"):
        raise Skip("pytest is not installed")
    deadline = time.monotonic() + timeout_s
    files, timed_out = [], False
    for target in step.pytest_targets:
        path = target.split("::")[0]
        if not (ROOT / path).is_file():
            files.append({"target": target, "status": "missing"})
            continue
        left = deadline - time.monotonic()
        if left < 10:
            files.append({"target": target, "status": "skipped", "detail": "no time left"})
            continue
        stem = Path(path).stem + ("-" + target.split("::")[1] if "::" in target else "")
        junit = out / "logs" / f"{step.name}-{stem}.xml"
        cmd = [sys.executable, "-m", "pytest", target, "-m", "gpu", "-v", "-rs", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={junit}"]
        t0 = time.monotonic()
        code, cut = run_process(cmd, env, out / "logs" / f"{step.name}.log", left)
        timed_out |= cut
        result = {"target": target, "exit_code": code, "timed_out": cut, "seconds": round(time.monotonic() - t0, 1)}
        result.update(parse_junit(junit) if junit.is_file() else {"counts": None})
        files.append(result)
    counts = {k: sum((f.get("counts") or {}).get(k, 0) for f in files) for k in ("passed", "failed", "error", "skipped")}
    properties = {c["test"]: c["properties"] for f in files for c in f.get("cases", []) if c.get("properties")}
    return {"counts": counts, "files": files, "properties": properties, "timed_out": timed_out}


def parse_junit(path: Path) -> dict:
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        name = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        status, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                text = el.get("message") or el.text or ""
                detail = text.strip().splitlines()[0][:300] if text.strip() else ""
                break
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        cases.append({"test": name, "status": status, "detail": detail, "seconds": float(tc.get("time", 0) or 0),
                      **({"properties": props} if props else {})})
    counts = {s: sum(1 for c in cases if c["status"] == s) for s in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "cases": cases}


def collect_tests(env: dict, targets: tuple[str, ...] = (*GPU_TEST_FILES, "tests/test_gpu_streams.py")) -> list[dict]:
    """``pytest --collect-only`` per GPU test file: how many collect, and the collection errors."""
    rows = []
    for target in targets:
        if not (ROOT / target).is_file():
            continue
        proc = subprocess.run([sys.executable, "-m", "pytest", target, "-m", "gpu", "--collect-only", "-q", "-p", "no:cacheprovider"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        lines = proc.stdout.splitlines()
        collected = sum(1 for line in lines if "::" in line and not line.startswith("ERROR"))
        errors = [line for line in lines if line.startswith("ERROR") or "Interrupted" in line]
        rows.append({"file": target, "collected": collected, "errors": errors[:3], "exit_code": proc.returncode})
    return rows


# ------------------------------------------------------------------------------- measuring steps


def _cuda():
    import torch

    if not torch.cuda.is_available():
        raise Skip("no CUDA device")
    return torch, torch.device("cuda")


def _err(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def step_facts(r: Recorder) -> None:
    import platform
    from importlib import metadata

    import torch

    r.put("python", platform.python_version())
    r.put("torch", torch.__version__)
    r.put("cuda_runtime", torch.version.cuda)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    r.put("packages", versions)
    imports = {}
    for mod in MODULES:
        try:
            importlib.import_module(mod)
            imports[mod] = "ok"
        except BaseException as err:  # noqa: BLE001  (a module's import error is the figure)
            imports[mod] = _err(err)
    r.put("mimic_imports", imports)
    from mimic import fingerprint

    r.put("git_commit", fingerprint.git_commit())
    if not torch.cuda.is_available():
        raise Skip("no CUDA device (versions and imports recorded)")
    r.put("gpu", fingerprint.gpu_fingerprint(0))
    r.put("gpu_count", torch.cuda.device_count())
    r.put("cudnn", torch.backends.cudnn.version())
    r.put("flags", {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "sdp_flash": torch.backends.cuda.flash_sdp_enabled(),
        "sdp_mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
        "sdp_cudnn": getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: None)(),
        "sdp_math": torch.backends.cuda.math_sdp_enabled(),
    })
    free, total = torch.cuda.mem_get_info()
    r.put("memory_free_gb", round(free / 1e9, 1))
    r.put("memory_total_gb", round(total / 1e9, 1))


def _time_cuda(fn, iters: int = 3) -> float:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def _kernels(fn, match=("flash", "fmha", "attention", "sdpa", "cudnn", "softmax", "gemm")) -> list[str]:
    """Names of the CUDA kernels ``fn`` launches that look like attention (one profiled call)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = sorted({e.key for e in prof.key_averages() if any(m in e.key.lower() for m in match)})
    return [n[:120] for n in names][:8]


def step_sdpa(r: Recorder) -> None:
    torch, dev = _cuda()
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    forced = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
              "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    for label, (b, h, t, d) in SDPA_SHAPES.items():
        row = {"shape": [b, h, t, d]}
        try:
            q, k, v = (torch.randn(b, h, t, d, device=dev, dtype=torch.float16) for _ in range(3))
            call = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
            call()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            row["seconds"] = round(_time_cuda(call), 5)
            row["peak_extra_gb"] = round((torch.cuda.max_memory_allocated() - base) / 1e9, 3)
            row["tflops"] = round(4 * b * h * t * t * d / row["seconds"] / 1e12, 1)
            try:
                row["kernels"] = _kernels(call)
            except Exception as err:  # noqa: BLE001  (the profiler is a nicety: the timing stands)
                row["kernels"] = _err(err)
            per_backend = {}
            for name, backend in forced.items():
                if name == "math" and b * h * t * t * 2 > 8e9:
                    per_backend[name] = "not tried (score tensor over 8 GB)"
                    continue
                try:
                    with sdpa_kernel([backend]):
                        call()
                        per_backend[name] = round(_time_cuda(call, 2), 5)
                except Exception as err:  # noqa: BLE001  (unsupported here: the message is the figure)
                    per_backend[name] = _err(err)[:120]
            row["forced_seconds"] = per_backend
            del q, k, v
        except Exception as err:  # noqa: BLE001
            row["error"] = _err(err)
        torch.cuda.empty_cache()
        r.put(label, row)


def _real_unet(torch, dev, seed: int = 0):
    from mimic.benchmarks.flops import REAL_UNET_CONFIG
    from mimic.model.unet import PoseUNet

    torch.manual_seed(seed)
    with torch.device(dev):
        model = PoseUNet.from_config(dict(REAL_UNET_CONFIG))
    return model.to(device=dev, dtype=torch.float16).eval()


def _unet_feeds(torch, dev, frames: int, height: int = HEIGHT, width: int = WIDTH, seed: int = 0):
    from mimic.benchmarks.flops import REAL_UNET_CONFIG

    h, w = height // 8, width // 8
    gen = torch.Generator(device=dev).manual_seed(seed)
    args = (
        torch.randn(2, frames, 8, h, w, device=dev, dtype=torch.float16, generator=gen),
        torch.full((2,), 0.5, device=dev),
        torch.randn(2, 1, REAL_UNET_CONFIG["cross_attention_dim"], device=dev, dtype=torch.float16, generator=gen),
        torch.tensor([[6.0, 127.0, 0.02]] * 2, device=dev, dtype=torch.float16),
    )
    pose = torch.randn(2 * frames, REAL_UNET_CONFIG["block_out_channels"][0], h, w, device=dev, dtype=torch.float16, generator=gen)
    return args, pose


def step_unet(r: Recorder, frames: int) -> None:
    """One CFG pair (batch 2) per call at 576x1024, random full-size weights, fp16, cuDNN autotuned."""
    torch, dev = _cuda()
    from mimic.benchmarks.flops import ModelConfigs, unet_flops
    from mimic.benchmarks.matmul_rate import measure_matmul_rate

    torch.backends.cudnn.benchmark = True  # what a job that promises no bit identity runs with
    rate = measure_matmul_rate(dev)
    r.put("matmul", rate.to_dict())
    t0 = time.perf_counter()
    model = _real_unet(torch, dev)
    r.put("parameters", sum(p.numel() for p in model.parameters()))
    r.put("build_seconds", round(time.perf_counter() - t0, 1))
    args, pose = _unet_feeds(torch, dev, frames)
    r.put("frames", frames)
    with torch.inference_mode():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(*args, pose_latents=pose)  # first call: cuDNN autotuning, SDPA selection, allocator growth
        torch.cuda.synchronize()
        r.put("first_call_seconds", round(time.perf_counter() - t0, 2))
        torch.cuda.reset_peak_memory_stats()  # after the warm-up: cuDNN's trial workspaces are not the job's
        out = {}
        seconds = _time_cuda(lambda: out.__setitem__("y", model(*args, pose_latents=pose)))
    flops = unet_flops(ModelConfigs.real(), frames, HEIGHT, WIDTH, batch=2)
    achieved = flops / seconds / 1e12
    r.put("seconds", round(seconds, 4))
    r.put("tflop", round(flops / 1e12, 2))
    r.put("achieved_tflops", round(achieved, 1))
    r.put("fraction_of_matmul", round(achieved / rate.tflops_best, 3))
    r.put("peak_memory_gb", round(torch.cuda.max_memory_allocated() / 1e9, 2))
    r.put("peak_reserved_gb", round(torch.cuda.max_memory_reserved() / 1e9, 2))
    r.put("preflight_unet_estimate_gb", round(_estimate(frames).unet_bytes / 1e9, 2))  # to calibrate runtime/memory.py
    r.put("finite", bool(torch.isfinite(out["y"]).all()))
    if frames <= 16:
        try:
            with torch.inference_mode():
                r.put("attention_kernels", _kernels(lambda: model(*args, pose_latents=pose)))
        except Exception as err:  # noqa: BLE001
            r.put("attention_kernels", _err(err))


def _weight_mb(model) -> float:
    return round(sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) / 1e6, 1)


def step_fp8(r: Recorder, frames: tuple[int, ...] = FP8_FRAMES) -> None:
    """The UNet CFG pair (batch 2, 576x1024, random full-size weights) in fp16 and with its
    transformer Linear layers in FP8 (``mimic.runtime.fp8``: the ``--precision fp8`` path), both
    models in this process, warmed up, then timed alternately; per window: ms per call, the speed-up,
    and how far the FP8 output is from the fp16 one. Last, at the first window, FP8 with calibrated
    (static) activation scales: what the per-call scale reduction costs. Skipped (with the reason)
    below compute capability 8.9."""
    torch, dev = _cuda()
    import copy

    from mimic.runtime import fp8

    why = fp8.fp8_support(dev)
    if why is not None:
        raise Skip(f"no FP8 here: {why}")
    torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    fp16 = _real_unet(torch, dev)
    model8 = copy.deepcopy(fp16)
    conversion = fp8.convert_unet(model8)
    r.put("build_seconds", round(time.perf_counter() - t0, 1))
    r.put("conversion", conversion.to_dict())
    r.put("weights_mb", {"fp16": _weight_mb(fp16), "fp8": _weight_mb(model8)})
    r.put("kernel", "torch._scaled_mm, per-tensor scales, fast accumulation, fp16 out")
    for n in frames:
        r.put(f"frames{n}", _fp16_vs_fp8(torch, fp16, model8, n))
    n = frames[0]
    args, pose = _unet_feeds(torch, dev, n, HEIGHT, WIDTH)
    fp8.calibrate(model8, lambda: model8(*args, pose_latents=pose))  # on the very input it is timed on: a best case
    r.put(f"frames{n}_calibrated", _fp16_vs_fp8(torch, fp16, model8, n))


def _fp16_vs_fp8(torch, fp16, model8, n: int) -> dict:
    """One window: both models warmed up, then timed alternately (drifting clocks touch both alike)."""
    args, pose = _unet_feeds(torch, fp16.device, n, HEIGHT, WIDTH)  # read now: a test shrinks them
    out, row = {}, {"frames": n}
    calls = {"fp16": lambda: out.__setitem__("fp16", fp16(*args, pose_latents=pose)),
             "fp8": lambda: out.__setitem__("fp8", model8(*args, pose_latents=pose))}
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        for name, call in calls.items():  # first calls: cuDNN autotuning, allocator growth
            t0 = time.perf_counter()
            call()
            torch.cuda.synchronize()
            row[f"first_call_seconds_{name}"] = round(time.perf_counter() - t0, 2)
        best = {name: float("inf") for name in calls}
        for _ in range(2):
            for name, call in calls.items():
                best[name] = min(best[name], _time_cuda(call, 2))
    a, b = out.pop("fp16").float(), out.pop("fp8").float()
    row.update({f"ms_{name}": round(1e3 * s, 1) for name, s in best.items()})
    row["speedup"] = round(best["fp16"] / best["fp8"], 3)
    row["max_abs_diff"] = round(float((a - b).abs().max()), 4)
    row["max_abs_fp16"] = round(float(a.abs().max()), 4)
    row["rel_diff"] = round(float((a - b).norm() / a.norm()), 5)
    row["finite"] = {"fp16": bool(torch.isfinite(a).all()), "fp8": bool(torch.isfinite(b).all())}
    row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)  # both models and one window's activations
    del a, b
    torch.cuda.empty_cache()
    return row


def _estimate(window: int):
    """The CUDA memory preflight's uncalibrated terms at 576x1024 for ``window`` frames (fp16)."""
    from mimic.benchmarks.flops import REAL_UNET_CONFIG, REAL_VAE_CONFIG
    from mimic.model.config import GenerationConfig
    from mimic.runtime.memory import estimate_cuda_job_memory

    config = GenerationConfig(window=window, overlap=min(6, window - 1))
    return estimate_cuda_job_memory(dict(REAL_UNET_CONFIG), dict(REAL_VAE_CONFIG), config, fp32=False)


def step_vae_decode(r: Recorder) -> None:
    torch, dev = _cuda()
    from diffusers import AutoencoderKLTemporalDecoder

    from mimic.benchmarks.flops import REAL_VAE_CONFIG
    from mimic.model.config import GenerationConfig

    chunk = GenerationConfig().decode_chunk
    torch.manual_seed(0)
    with torch.device(dev):
        vae = AutoencoderKLTemporalDecoder.from_config(dict(REAL_VAE_CONFIG))
    vae = vae.to(device=dev, dtype=torch.float16).eval()
    z = torch.randn(chunk, 4, HEIGHT // 8, WIDTH // 8, device=dev, dtype=torch.float16)
    r.put("chunk", chunk)
    with torch.inference_mode():
        t0 = time.perf_counter()
        vae.decode(z, num_frames=chunk)
        torch.cuda.synchronize()
        r.put("first_call_seconds", round(time.perf_counter() - t0, 2))
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = {}
        seconds = _time_cuda(lambda: out.__setitem__("x", vae.decode(z, num_frames=chunk).sample), 2)
    r.put("seconds", round(seconds, 4))
    r.put("seconds_per_frame", round(seconds / chunk, 4))
    r.put("peak_extra_gb", round((torch.cuda.max_memory_allocated() - base) / 1e9, 2))
    r.put("peak_reserved_gb", round(torch.cuda.max_memory_reserved() / 1e9, 2))
    r.put("preflight_vae_estimate_gb", round(_estimate(chunk).vae_bytes / 1e9, 2))
    bad = int((~torch.isfinite(out["x"])).sum())
    r.put("nan_inf", bad)
    r.put("note", "random weights: the NaN count says nothing about the real weights' fp16 range")


def _unet_hashes(seed: int = 0, device: str = "cuda") -> dict:
    """In this process: the UNet output hash with cuDNN autotuning and with deterministic algorithms."""
    import torch

    dev = torch.device(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = _real_unet(torch, dev, seed)
    args, pose = _unet_feeds(torch, dev, 8, 256, 448, seed)
    hashes = {}
    for mode, (benchmark, deterministic) in {"autotuned": (True, False), "deterministic": (False, True)}.items():
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, deterministic
        with torch.inference_mode():
            model(*args, pose_latents=pose)
            y = model(*args, pose_latents=pose)
        hashes[mode] = hashlib.sha256(y.float().cpu().numpy().tobytes()).hexdigest()[:16]
    return hashes


def step_determinism(r: Recorder) -> None:
    _cuda()
    runs = []
    for k in range(2):
        proc = subprocess.run([sys.executable, __file__, "--unet-hashes"], cwd=ROOT, capture_output=True, text=True, timeout=100)
        if proc.returncode != 0:
            raise RuntimeError(f"process {k}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r.put("processes", runs)
    for mode in runs[0]:
        r.put(f"{mode}_identical", runs[0][mode] == runs[1][mode])


def step_end_to_end(r: Recorder) -> None:
    torch, _ = _cuda()
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from gpu_helpers import pose_frame_jobs, read_png_frames

    from mimic.runtime import determinism, pipeline
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    # the same noise for both devices (a CUDA job draws its own on the GPU): only the numerics differ
    cpu_draws = determinism.job_noise
    pipeline.job_noise = lambda seed, device, *shapes: tuple(t.to(device) for t in cpu_draws(seed, torch.device("cpu"), *shapes))
    r.put("noise", "CPU draws on both devices")
    work = Path(tempfile.mkdtemp(prefix="mimic-e2e-"))
    os.environ.setdefault("MIMIC_CACHE_DIR", str(work / "cache"))
    for preset in ("tiny", "toy"):
        row, frames = {}, {}
        for device in ("cpu", "cuda"):
            (job,) = pose_frame_jobs(work / preset / device, 1)
            t0 = time.perf_counter()
            with MimicMotion.from_preset(preset, RuntimeOptions(backend="torch", device=device)) as mm:
                row[f"{device}_load_seconds"] = round(time.perf_counter() - t0, 1)
                t0 = time.perf_counter()
                report = mm.render(job)
                row[f"{device}_job_seconds"] = round(time.perf_counter() - t0, 2)
            if report.error is not None:
                row[f"{device}_error"] = str(report.error)[:300]
                break
            frames[device] = read_png_frames(job.out).astype(np.float64)
        if len(frames) == 2:
            diff = np.abs(frames["cuda"] - frames["cpu"])
            row.update(frames=len(frames["cpu"]), mean_abs_diff=round(float(diff.mean()), 3), max_abs_diff=float(diff.max()))
        r.put(preset, row)


# ---------------------------------------------------------------------------------------- driver


def run_step(step: Step, out: Path, env: dict, timeout_s: float) -> dict:
    record = {"step": step.name, "what": step.what, "limit_s": step.limit_s, "expect_s": step.expect_s}
    missing = [m for m in step.needs if not _importable(m)]
    t0 = time.monotonic()
    if missing:
        record.update(status="skipped", error=f"needs {', '.join(missing)} (carry the wheels: make gpu-wheels)")
    elif step.pytest_targets:
        try:
            figures = pytest_runs(step, out, env, timeout_s)
            c = figures["counts"]
            status = "timeout" if figures["timed_out"] else "failed" if c["failed"] or c["error"] else "ok" if c["passed"] else "skipped"
            record.update(status=status, figures=figures)
        except Skip as why:
            record.update(status="skipped", error=str(why))
    else:
        figures_file = out / "logs" / f"{step.name}.json"
        figures_file.unlink(missing_ok=True)
        code, cut = run_process([sys.executable, __file__, "--run-step", step.name, "--figures", str(figures_file)], env,
                                out / "logs" / f"{step.name}.log", timeout_s)
        figures = json.loads(figures_file.read_text()) if figures_file.is_file() else {}
        why = figures.pop("__skip__", None)
        error = figures.pop("__error__", None)
        status = "timeout" if cut else "skipped" if why else "ok" if code == 0 else "failed"
        record.update(status=status, figures=figures, error=why or error or (f"cut at its limit of {timeout_s:.0f} s" if cut else None)
                      or (None if code == 0 else f"exit code {code} (see logs/{step.name}.log)"))
    record["seconds"] = round(time.monotonic() - t0, 1)
    return record


def child_main(name: str, figures_file: Path) -> int:
    step = next(s for s in plan() if s.name == name)
    rec = Recorder(figures_file)
    try:
        step.run(rec)
        return 0
    except Skip as why:
        rec.put("__skip__", str(why))
        return 0
    except BaseException as err:  # noqa: BLE001  (the step's error is its result)
        import torch

        oom = isinstance(err, getattr(torch.cuda, "OutOfMemoryError", ())) if "torch" in sys.modules else False
        rec.put("__error__", ("out of memory: " if oom else "") + _err(err))
        import traceback

        traceback.print_exc()
        return 1


def plan_rows() -> list[dict]:
    rows = []
    for s in plan():
        missing = [m for m in s.needs if not _importable(m)]
        rows.append({"step": s.name, "what": s.what, "limit_s": s.limit_s, "expect_s": s.expect_s,
                     "runs": not missing, **({"skips": f"needs {', '.join(missing)}"} if missing else {})})
    return rows


def measured(records: list[dict]) -> bool:
    """Did any step measure something on the GPU (beyond the facts)?"""
    return any(r["status"] in ("ok", "timeout", "failed") and r.get("figures") and r["step"] != "facts" for r in records)


def markdown(records: list[dict], header: dict) -> str:
    lines = ["# GPU check", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()] + [""]
    lines += ["| step | status | seconds (expected) | what |", "| --- | --- | --- | --- |"]
    for r in records:
        lines.append(f"| {r['step']} | {r['status']} | {r.get('seconds', 0):.0f} ({r.get('expect_s', '?')}) | {r.get('what', '')} |")
    lines.append("")
    by = {r["step"]: r for r in records}
    unet = [by[n] for n in ("unet16", "unet72") if n in by and by[n].get("figures", {}).get("seconds")]
    if unet:
        m = unet[0]["figures"]["matmul"]
        lines += ["## UNet CFG pair at 1024x576 (random full-size weights, fp16)", "",
                  f"fp16 matmul rate (n={m['n']}): {m['tflops_best']:.0f} TFLOP/s best, {m['tflops']:.0f} median", "",
                  "| frames | s per call | TFLOP per call | achieved TFLOP/s | of matmul rate | peak memory GB | first call s |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in unet:
            f = r["figures"]
            lines.append(f"| {f['frames']} | {f['seconds']:.3f} | {f['tflop']:.0f} | {f['achieved_tflops']:.0f} | "
                         f"{100 * f['fraction_of_matmul']:.0f}% | {f['peak_memory_gb']:.1f} | {f.get('first_call_seconds', '?')} |")
        lines.append("")
    rows = [(k, v) for k, v in by.get("fp8", {}).get("figures", {}).items() if isinstance(v, dict) and "speedup" in v]
    if rows:
        lines += ["## UNet CFG pair at 1024x576, fp16 vs FP8 Linear layers (random full-size weights)", "",
                  "| frames | fp16 ms per call | fp8 ms per call | speed-up | max abs diff (of max abs) | relative diff |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {f['frames']}{' (calibrated scales)' if k.endswith('_calibrated') else ''} | {f['ms_fp16']:.1f} | "
                  f"{f['ms_fp8']:.1f} | {f['speedup']:.2f}x | {f['max_abs_diff']:.3g} ({f['max_abs_fp16']:.3g}) | {f['rel_diff']:.2%} |"
                  for k, f in rows]
        lines.append("")
    for r in records:
        lines += [f"## {r['step']}: {r['status']}", ""]
        if r.get("error"):
            lines += [f"error: {r['error']}", ""]
        if r.get("figures"):
            lines += ["```json", json.dumps(r["figures"], indent=1, default=str)[:6000], "```", ""]
    return "\n".join(lines)


def write_report(out: Path, header: dict) -> Path:
    path = out / "gpu_check.md"
    path.write_text(markdown(read_lines(out / STEPS_FILE), header))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu-check", help="folder for steps.jsonl, gpu_check.md and logs/ (default: gpu-check)")
    ap.add_argument("--wheels", default=str(WHEELS), help="folder of carried wheels (default: .whl, from `make gpu-wheels`)")
    ap.add_argument("--extra-path", action="append", default=[], help="folder of unpacked packages to import from (repeatable)")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="time for the whole check (default: %(default)s)")
    ap.add_argument("--only", default="", help="comma-separated step names (default: all, in plan order)")
    ap.add_argument("--plan", action="store_true", help="print the plan and collect the GPU tests; run nothing")
    ap.add_argument("--rehearse", action="store_true", help="run the steps even without a GPU (they skip): tests the check itself")
    ap.add_argument("--report", action="store_true", help="rewrite OUT/gpu_check.md from OUT/steps.jsonl")
    ap.add_argument("--run-step", help=argparse.SUPPRESS)
    ap.add_argument("--figures", help=argparse.SUPPRESS)
    ap.add_argument("--unet-hashes", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_step:  # in a step's subprocess
        import_mimic([])
        return child_main(args.run_step, Path(args.figures))
    if args.unet_hashes:
        import_mimic([])
        print(json.dumps(_unet_hashes()))
        return 0
    out = Path(args.out)
    if args.report:
        print(f"wrote {write_report(out, {'rewritten from': STEPS_FILE})}")
        return 0
    t_start = time.monotonic()
    shim, pythonpath = import_mimic(args.extra_path)
    where = f"{ROOT.name} (not installed: imported through {shim})" if shim else f"{ROOT.name} (installed)"
    print(f"mimic: {where}", flush=True)
    site, installed = install_wheels(Path(args.wheels)) if (args.plan or args.rehearse or _gpu_reason() is None) else (None, [])
    if site:
        pythonpath.append(site)
        print(f"carried wheels unpacked: {', '.join(installed)}", flush=True)
    env = child_env(pythonpath)
    if args.plan:
        rows = plan_rows()
        collected = collect_tests(env)
        out.mkdir(parents=True, exist_ok=True)
        (out / "plan.json").write_text(json.dumps({"steps": rows, "collected": collected, "wheels": installed}, indent=1))
        for row in rows:
            print(f"  {row['step']:<12} {row['expect_s']:>4} s expected, limit {row['limit_s']:>3} s  "
                  f"{'runs' if row['runs'] else 'skips: ' + row['skips']}  ({row['what']})")
        for c in collected:
            print(f"  collect {c['file']}: {c['collected']} tests{'; ' + ' | '.join(c['errors']) if c['errors'] else ''}")
        return 1 if any(c["errors"] or c["exit_code"] not in (0, 5) for c in collected) else 0
    why = _gpu_reason()
    if why is not None and not args.rehearse:
        print(f"no GPU ({why}); nothing to check")
        return 0
    (out / "logs").mkdir(parents=True, exist_ok=True)
    steps_file = out / STEPS_FILE
    steps_file.unlink(missing_ok=True)
    only = [s for s in args.only.split(",") if s]
    deadline = t_start + args.budget_s
    for step in plan():
        if only and step.name not in only:
            continue
        left = deadline - time.monotonic()
        if left < min(step.limit_s, 20):
            record = {"step": step.name, "what": step.what, "status": "skipped", "seconds": 0, "expect_s": step.expect_s,
                      "limit_s": step.limit_s, "error": f"no time left ({left:.0f} s of the budget)"}
        else:
            print(f"{step.name}: {step.what} (limit {min(step.limit_s, left):.0f} s) ...", flush=True)
            record = run_step(step, out, env, min(step.limit_s, left))
        append_line(steps_file, record)
        figures = record.get("figures") or {}
        summary = record.get("error") or (", ".join(f"{v} {k}" for k, v in figures["counts"].items()) if "counts" in figures else
                                          ", ".join(f"{k}={v}" for k, v in figures.items() if not isinstance(v, (dict, list)))[:200])
        print(f"  {record['status']} in {record['seconds']:.0f} s{': ' + summary if summary else ''}", flush=True)
    records = read_lines(steps_file)
    header = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mimic": where,
              "wheels": ", ".join(installed) or "none", "total seconds": round(time.monotonic() - t_start, 1)}
    print(f"wrote {steps_file} and {write_report(out, header)}")
    if why is not None:
        return 0  # rehearsal without a GPU
    if not measured(records):
        print("a GPU is here but nothing was measured")
        return 2
    return 1 if any(r["status"] in ("failed", "timeout") for r in records) else 0


def _gpu_reason() -> str | None:
    """None when a CUDA GPU is usable (the project's one probe), else why not."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed here"
    from mimic import fingerprint

    return fingerprint.cuda_probe_error()


if __name__ == "__main__":
    sys.exit(main())
