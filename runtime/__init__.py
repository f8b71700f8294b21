"""The production runtime: ``MimicMotion`` (load once, render many), ``RuntimeOptions``, ``Job``.

Attributes are imported on first use so that ``mimic --help`` stays fast.
"""
from __future__ import annotations

_EXPORTS = {
    "MimicMotion": "mimic.runtime.api",
    "RuntimeOptions": "mimic.runtime.api",
    "JobReport": "mimic.runtime.api",
    "Job": "mimic.runtime.jobs",
    "JobExecutor": "mimic.runtime.executor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mimic.runtime' has no attribute {name!r}")
