"""Shared fixtures: the tiny preset generated once per session into a temporary cache, and the
`gpu` marker skipping cleanly (with the reason) where no CUDA device is present."""
from __future__ import annotations

import os

import pytest


def _gpu_reason() -> str | None:
    """None when a CUDA GPU is usable here (the project's one probe: cuda-python, else torch)."""
    from mimic.fingerprint import cuda_probe_error

    reason = cuda_probe_error()
    return f"no CUDA GPU here ({reason})" if reason else None


def pytest_collection_modifyitems(config, items):
    reason = _gpu_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"gpu test: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("mimic-cache")
    old = os.environ.get("MIMIC_CACHE_DIR")
    os.environ["MIMIC_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MIMIC_CACHE_DIR", None)
    else:
        os.environ["MIMIC_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_layout(tiny_cache):
    from mimic.model.tiny import ensure_tiny_weights

    return ensure_tiny_weights(tiny_cache)


@pytest.fixture(scope="session")
def tiny_models(tiny_layout):
    from mimic.model.loader import load_reference_models

    return load_reference_models(tiny_layout)
