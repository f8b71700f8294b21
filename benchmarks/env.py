"""Environment fingerprint stored with every benchmark record: ``mimic.fingerprint.environment()``
(safe on any machine: the GPU is probed without raising, TensorRT is identified from package
metadata only), plus the short labels the reports print."""
from __future__ import annotations

from mimic.fingerprint import environment


def fingerprint() -> dict:
    """Everything that decides what a benchmark number means on this machine."""
    return environment()


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
