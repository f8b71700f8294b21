"""Environment fingerprint stored with every benchmark record.

Safe on any machine: the GPU is probed through ``mimic.engine.gpu`` (``cudaGetDeviceCount``, which
returns an error instead of raising without a driver) or, when that module is absent, through
``torch.cuda.is_available()``. TensorRT is identified from package metadata only: no TensorRT
module is imported here, so no TensorRT runtime object can ever be created on a machine without a
GPU (that segfaults at interpreter exit, acceleration spec section 7).
"""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shutil
import subprocess
from pathlib import Path

# TensorRT distributions by flavour, most specific first (the first installed one per flavour wins).
TRT_DISTRIBUTIONS = {
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings"),
    "tensorrt-lean": ("tensorrt-lean", "tensorrt-lean-cu13", "tensorrt-lean-cu12"),
    "tensorrt-rtx": ("tensorrt-rtx", "tensorrt-rtx-cu13", "tensorrt-rtx-cu12", "tensorrt_rtx_cu13"),
}
PACKAGES = ("mimic-engine", "torch", "onnxruntime", "onnxruntime-gpu", "diffusers", "transformers", "numpy", "onnx", "cuda-python")


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def tensorrt_installs() -> list[dict[str, str]]:
    """Installed TensorRT flavours and versions, from package metadata (nothing is imported)."""
    found = []
    for flavour, dists in TRT_DISTRIBUTIONS.items():
        for dist in dists:
            version = _version(dist)
            if version:
                found.append({"flavour": flavour, "version": version, "distribution": dist})
                break
    return found


def _gpu_module():
    try:
        from mimic.engine import gpu  # being finished elsewhere: tolerate its absence or breakage
    except Exception:
        return None
    return gpu


def _nvidia_smi_driver() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    return line.strip() or None


def _cuda_driver_api_version() -> str | None:
    """CUDA version the driver supports (``cudaDriverGetVersion``), e.g. ``13.0``; only called with a GPU."""
    try:
        from cuda.bindings import runtime  # type: ignore[import-not-found]

        err, v = runtime.cudaDriverGetVersion()
        if int(err) == 0 and v:
            return f"{v // 1000}.{(v % 1000) // 10}"
    except Exception:
        pass
    return None


def gpu_fingerprint(index: int = 0) -> dict | None:
    """Name, compute capability, memory and driver of GPU ``index``; None without a usable GPU."""
    gpu = _gpu_module()
    info = None
    if gpu is not None:
        try:
            g = gpu.gpu_info(index)
            if g is not None:
                info = {"name": g.name, "compute_capability": g.compute_capability, "memory_bytes": int(g.total_memory_bytes)}
        except Exception:
            info = None
    if info is None:
        try:
            import torch

            if torch.cuda.is_available() and torch.cuda.device_count() > index:
                p = torch.cuda.get_device_properties(index)
                info = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}", "memory_bytes": int(p.total_memory)}
        except Exception:
            info = None
    if info is None:
        return None
    info["driver"] = _nvidia_smi_driver()
    info["cuda_driver_api"] = _cuda_driver_api_version()
    return info


def git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when files changed), when this runs from a git clone."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists() or shutil.which("git") is None:
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def fingerprint() -> dict:
    """Everything that decides what a benchmark number means on this machine."""
    import psutil
    import torch

    try:
        import onnxruntime as ort

        ort_providers = list(ort.get_available_providers())
    except Exception:
        ort_providers = []
    try:
        load = round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        load = None
    gpu = gpu_fingerprint(0)
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_cores_logical": os.cpu_count() or 0,
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "memory_bytes": int(psutil.virtual_memory().total),
        "load_avg_1m": load,  # other work on the machine while the benchmark started
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "cuda_runtime": torch.version.cuda,  # what torch was built against (None for CPU builds)
        "tensorrt": tensorrt_installs(),
        "onnxruntime_providers": ort_providers,
        "packages": {p: v for p in PACKAGES if (v := _version(p))},
        "git_commit": git_commit(),
    }


def device_label(env: dict) -> str:
    """Short name of the device the numbers were measured on: the GPU name, else the CPU."""
    gpu = env.get("gpu")
    if gpu:
        return f"{gpu.get('name', 'GPU')} (sm_{str(gpu.get('compute_capability', '?')).replace('.', '')})"
    cores = env.get("cpu_cores_logical")
    return f"CPU {env.get('cpu_model', '?')} x{cores}" if cores else f"CPU {env.get('cpu_model', '?')}"


def describe(env: dict) -> str:
    """One line for logs and report headers."""
    parts = [device_label(env)]
    trt = ", ".join(f"{t['flavour']} {t['version']}" for t in env.get("tensorrt") or [])
    pk = env.get("packages") or {}
    parts.append(f"torch {pk.get('torch', '?')}")
    if "onnxruntime" in pk or "onnxruntime-gpu" in pk:
        parts.append(f"onnxruntime {pk.get('onnxruntime-gpu') or pk.get('onnxruntime')}")
    if trt:
        parts.append(trt)
    if env.get("gpu") and env["gpu"].get("driver"):
        parts.append(f"driver {env['gpu']['driver']}")
    return ", ".join(parts)
