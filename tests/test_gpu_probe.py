"""The GPU probe (``mimic.fingerprint``): cuda-python first, torch when cuda-python cannot answer.

cuda-python 13 answers ``cudaErrorInsufficientDriver`` on a CUDA 12 driver where torch runs, and a
bare GPU machine may have torch but no cuda-python: in both cases the GPU must still be found (else
every GPU test and every GPU code path would be skipped as "no GPU"). Faked here on CPU.
"""
from __future__ import annotations

import types

import torch

from mimic import fingerprint
from mimic.engine import gpu


class _Err(int):
    name = "cudaErrorInsufficientDriver"


def _fake_runtime(count: int, ok: bool):
    rt = types.SimpleNamespace()
    rt.cudaGetDeviceCount = lambda: (0 if ok else _Err(35), count)
    rt.cudaGetDeviceProperties = lambda i: (_Err(35), None)
    return rt


def _torch_sees(monkeypatch, n: int):
    props = types.SimpleNamespace(name="NVIDIA H200", major=9, minor=0, total_memory=141 << 30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)


def test_cuda_python_too_new_for_the_driver_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(fingerprint, "_cuda_runtime", lambda: _fake_runtime(0, ok=False))
    _torch_sees(monkeypatch, 1)
    assert fingerprint.cuda_device_count() == 1
    assert fingerprint.cuda_probe_error() is None
    info = gpu.gpu_info(0)
    assert info is not None and info.compute_capability == "9.0" and info.name == "NVIDIA H200"
    assert gpu.require_gpu("a test").sm == "sm_90"


def test_no_cuda_python_but_torch_sees_a_gpu(monkeypatch):
    monkeypatch.setattr(fingerprint, "_cuda_runtime", lambda: None)
    _torch_sees(monkeypatch, 2)
    assert fingerprint.cuda_device_count() == 2 and gpu.gpu_available()
    assert fingerprint.gpu_properties(1)["memory_bytes"] == 141 << 30


def test_no_gpu_anywhere_names_both_probes(monkeypatch):
    monkeypatch.setattr(fingerprint, "_cuda_runtime", lambda: _fake_runtime(0, ok=False))
    _torch_sees(monkeypatch, 0)
    assert fingerprint.cuda_device_count() == 0 and not gpu.gpu_available()
    why = fingerprint.cuda_probe_error()
    assert "cudaErrorInsufficientDriver" in why and "torch sees no CUDA device" in why
    assert gpu.gpu_info(0) is None
