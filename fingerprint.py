"""The one environment fingerprint: package versions, Python, platform, CPU, GPU and CUDA facts.

Used by the service's ``versions()`` (job reports), the benchmark records (``benchmarks/env.py``),
the engine store's manifests (tool versions) and the export freshness record (torch version).

Safe on any machine and cheap to import (layer 0: nothing heavy at import time):

* the GPU is probed with ``cuda.bindings.runtime.cudaGetDeviceCount()``, which returns an error
  tuple instead of raising on a machine without a driver (``cuInit`` is never called); when that
  probe fails or cuda-python is absent, torch's ``torch.cuda.device_count()`` decides (imported
  lazily: cuda-python 13 reports no GPU on CUDA 12 drivers where torch runs fine);
* TensorRT is identified from package metadata only: no TensorRT module is imported here, so no
  TensorRT runtime object can ever be created on a machine without a GPU (that segfaults at
  interpreter exit).
"""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shutil
import subprocess
from pathlib import Path

# What ``versions()`` reports (job reports): the keys the service has always written.
VERSION_PACKAGES = ("mimic-engine", "torch", "onnxruntime", "onnxruntime-gpu", "diffusers", "transformers", "av", "tensorrt", "tensorrt-rtx-cu13")
# What a benchmark record lists under "packages".
BENCH_PACKAGES = ("mimic-engine", "torch", "onnxruntime", "onnxruntime-gpu", "diffusers", "transformers", "numpy", "onnx", "cuda-python")
# TensorRT distributions by flavour, most specific first (the first installed one per flavour wins).
TRT_DISTRIBUTIONS = {
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings"),
    "tensorrt-lean": ("tensorrt-lean", "tensorrt-lean-cu13", "tensorrt-lean-cu12"),
    "tensorrt-rtx": ("tensorrt-rtx", "tensorrt-rtx-cu13", "tensorrt-rtx-cu12", "tensorrt_rtx_cu13"),
}


# ------------------------------------------------------------------------------------ packages


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``; None when it is not installed."""
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def package_versions(dists: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``{dist: version}`` of the installed ones among ``dists`` (absent ones are left out)."""
    return {d: v for d in dists if (v := package_version(d))}


def python_version() -> str:
    return platform.python_version()


def versions() -> dict[str, str]:
    """Python, platform and the versions of the packages that decide what a job computed
    (job reports: ``{"python", "platform", "mimic-engine", "torch", ...}``)."""
    return {"python": python_version(), "platform": platform.platform(), **package_versions(VERSION_PACKAGES)}


def tensorrt_installs() -> list[dict[str, str]]:
    """Installed TensorRT flavours and versions, from package metadata (nothing is imported)."""
    found = []
    for flavour, dists in TRT_DISTRIBUTIONS.items():
        for dist in dists:
            version = package_version(dist)
            if version:
                found.append({"flavour": flavour, "version": version, "distribution": dist})
                break
    return found


# ------------------------------------------------------------------------------------------ CPU


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# ------------------------------------------------------------------------------------------ GPU


def _cuda_runtime():
    try:
        from cuda.bindings import runtime  # type: ignore[import-not-found]
    except Exception:  # cuda-python not installed, or a broken install
        return None
    return runtime


def _ok(err) -> bool:
    return int(err) == 0  # cudaSuccess


def _cuda_python_probe() -> tuple[int, str | None]:
    """``(count, why none)`` from cuda-python's ``cudaGetDeviceCount`` (never raises)."""
    rt = _cuda_runtime()
    if rt is None:
        return 0, "cuda-python (cuda.bindings) is not installed"
    try:
        err, count = rt.cudaGetDeviceCount()
    except Exception as exc:  # pragma: no cover - defensive
        return 0, f"cudaGetDeviceCount raised {type(exc).__name__}: {exc}"
    if not _ok(err):
        return 0, f"cuda-python: {getattr(err, 'name', str(err))}"
    if not count:
        return 0, "no CUDA device found"
    return int(count), None


def _torch_device_count() -> int:
    """CUDA devices torch sees (0 for a CPU build or without a driver; never raises). torch's own
    probe goes through its CUDA runtime, which is what runs the work, so where it sees a GPU there
    is one, even when cuda-python's probe failed (cuda-python 13 on a CUDA 12 driver answers
    ``cudaErrorInsufficientDriver``; a bare machine may have no cuda-python at all)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:
        return 0


def cuda_device_count() -> int:
    """Number of CUDA devices; 0 without a driver or a GPU. Never raises.

    cuda-python's ``cudaGetDeviceCount`` first (no torch import); when it fails or is absent,
    torch's count (imported lazily)."""
    count, _ = _cuda_python_probe()
    return count or _torch_device_count()


def cuda_probe_error() -> str | None:
    """Why there is no usable GPU (e.g. ``cudaErrorInsufficientDriver``), or None when there is one."""
    count, why = _cuda_python_probe()
    if count or _torch_device_count():
        return None
    return f"{why}; torch sees no CUDA device either"


def gpu_properties(index: int = 0) -> dict | None:
    """``{"name", "compute_capability", "memory_bytes"}`` of device ``index``; None when there is no
    such GPU. Never raises."""
    if cuda_device_count() <= index:
        return None
    rt = _cuda_runtime()
    if rt is None or _cuda_python_probe()[0] <= index:  # only torch sees the device
        return _torch_gpu_properties(index)
    try:
        err, props = rt.cudaGetDeviceProperties(index)
        if _ok(err):
            name = props.name
            name = name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
            return {"name": name.rstrip("\x00").strip(), "compute_capability": f"{props.major}.{props.minor}", "memory_bytes": int(props.totalGlobalMem)}
    except Exception:
        pass
    return _torch_gpu_properties(index)


def _torch_gpu_properties(index: int) -> dict | None:
    try:  # torch, when the runtime bindings lack the struct (or are absent)
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > index:
            p = torch.cuda.get_device_properties(index)
            return {"name": p.name, "compute_capability": f"{p.major}.{p.minor}", "memory_bytes": int(p.total_memory)}
    except Exception:
        pass
    return None


def nvidia_driver_version() -> str | None:
    """The driver version ``nvidia-smi`` reports (None without it)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    return line.strip() or None


def cuda_driver_api_version() -> str | None:
    """CUDA version the driver supports (``cudaDriverGetVersion``), e.g. ``13.0``; only called with a GPU."""
    rt = _cuda_runtime()
    if rt is None:
        return None
    try:
        err, v = rt.cudaDriverGetVersion()
        if _ok(err) and v:
            return f"{v // 1000}.{(v % 1000) // 10}"
    except Exception:
        pass
    return None


def gpu_fingerprint(index: int = 0) -> dict | None:
    """Name, compute capability, memory and driver of GPU ``index``; None without a usable GPU."""
    info = gpu_properties(index)
    if info is None:
        info = _torch_gpu_properties(index)
    if info is None:
        return None
    info["driver"] = nvidia_driver_version()
    info["cuda_driver_api"] = cuda_driver_api_version()
    return info


# ------------------------------------------------------------------------------------ checkout


def git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when files changed), when this runs from a git clone."""
    root = Path(__file__).resolve().parent
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


# ---------------------------------------------------------------------------------------- all


def environment() -> dict:
    """Everything that decides what a benchmark number means on this machine (imports torch,
    psutil and onnxruntime)."""
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
    return {
        "platform": platform.platform(),
        "python": python_version(),
        "cpu_model": cpu_model(),
        "cpu_cores_logical": os.cpu_count() or 0,
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "memory_bytes": int(psutil.virtual_memory().total),
        "load_avg_1m": load,  # other work on the machine while the benchmark started
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu_fingerprint(0),
        "cuda_runtime": torch.version.cuda,  # what torch was built against (None for CPU builds)
        "tensorrt": tensorrt_installs(),
        "onnxruntime_providers": ort_providers,
        "packages": package_versions(BENCH_PACKAGES),
        "git_commit": git_commit(),
    }
