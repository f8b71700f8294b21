"""What this machine has: an NVIDIA GPU (probed without ever raising) and which TensorRT.

Rules this module keeps (the design notes on acceleration, §7; not in this repository):

- The GPU probe is ``cuda.bindings.runtime.cudaGetDeviceCount()`` (through ``mimic.fingerprint``):
  on a machine without a driver it returns an error tuple instead of raising.
  ``cuda.bindings.driver.cuInit`` is never called. When cuda-python is absent or its probe fails
  (cuda-python 13 on a CUDA 12 driver), torch's device count decides.
- TensorRT is only *imported* here (to read ``__version__``); no Runtime, engine or execution
  context is created: those segfault at interpreter exit in a process without a GPU.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from mimic import fingerprint
from mimic.errors import EngineError

# Build targets and the Python module each one imports.
TRT_MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
TARGETS = tuple(TRT_MODULES)

# Compute capabilities a TensorRT-RTX 1.x engine can target (its ComputeCapability enum); datacenter
# Hopper/Blackwell (sm_90/sm_100) are absent. Without explicit targets an RTX build is portable across
# the default set (Turing only when asked for explicitly), per the TensorRT-RTX "CPU-only AOT" docs.
RTX_SUPPORTED_SMS = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
RTX_DEFAULT_SMS = ("8.0", "8.6", "8.9", "12.0", "12.1")


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device."""

    index: int
    name: str
    compute_capability: str  # "8.6"
    total_memory_bytes: int

    @property
    def sm(self) -> str:
        """``sm_86`` form of the compute capability."""
        return "sm_" + self.compute_capability.replace(".", "")

    def describe(self) -> str:
        return f"{self.name} ({self.sm})"


@dataclass(frozen=True)
class TrtInfo:
    """An importable TensorRT flavour (``tensorrt`` or ``tensorrt-rtx``) and its version."""

    flavour: str  # "tensorrt" | "tensorrt-rtx"
    module: str  # "tensorrt" | "tensorrt_rtx"
    version: str  # the module's __version__, e.g. "11.4.0.106" / "1.7.1.116"

    def describe(self) -> str:
        name = "TensorRT-RTX" if self.flavour == "tensorrt-rtx" else "TensorRT"
        return f"{name} {self.version}"


@dataclass(frozen=True)
class RuntimeInfo:
    """What a plan is about to be loaded with: the TensorRT flavour/version and the GPU (None on CPU)."""

    trt: TrtInfo | None
    gpu: GpuInfo | None


def cuda_device_count() -> int:
    """Number of CUDA devices; 0 without cuda-python, a driver or a GPU. Never raises."""
    return fingerprint.cuda_device_count()


def cuda_probe_error() -> str | None:
    """Why there is no usable GPU (e.g. ``cudaErrorInsufficientDriver``), or None when there is one."""
    return fingerprint.cuda_probe_error()


def gpu_available() -> bool:
    return cuda_device_count() > 0


def gpu_info(index: int = 0) -> GpuInfo | None:
    """Name, compute capability and memory of device ``index``; None when there is no such GPU."""
    props = fingerprint.gpu_properties(index)
    if props is None:
        return None
    return GpuInfo(index, props["name"], props["compute_capability"], int(props["memory_bytes"]))


def require_gpu(what: str) -> GpuInfo:
    """The first GPU, or an EngineError naming ``what`` needs one and why none was found."""
    info = gpu_info(0)
    if info is None:
        raise EngineError(f"{what} needs an NVIDIA GPU with a CUDA driver; none found ({cuda_probe_error() or 'unknown reason'})")
    return info


def check_target(target: str) -> str:
    if target not in TRT_MODULES:
        raise EngineError(f"unknown TensorRT target {target!r}; choose one of: {', '.join(TARGETS)}")
    return target


@functools.lru_cache(maxsize=None)
def trt_info(target: str) -> TrtInfo | None:
    """The installed TensorRT of flavour ``target`` (None when it is not importable).

    Importing the module creates no runtime object; only ``__version__`` is read.
    """
    module = TRT_MODULES[check_target(target)]
    try:
        mod = importlib.import_module(module)
        version = str(mod.__version__)
    except Exception:
        return None
    return TrtInfo(flavour=target, module=module, version=version)


def installed_targets() -> list[str]:
    return [t for t in TARGETS if trt_info(t) is not None]


def runtime_info(target: str, device_index: int = 0) -> RuntimeInfo:
    """The TensorRT of flavour ``target`` and the GPU a plan would be loaded on."""
    return RuntimeInfo(trt=trt_info(target), gpu=gpu_info(device_index))


def can_execute(target: str) -> bool:
    """True when engines of flavour ``target`` can be deserialized and run here (GPU + module)."""
    return gpu_available() and trt_info(target) is not None

