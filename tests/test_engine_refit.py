"""Refit plumbing that runs on CPU: build flags per mode, options recovered from a manifest, and the
clear errors where a GPU is needed. The swap itself (refit + comparison with a fresh build) is the
``gpu`` test in test_engine_gpu.py."""
from __future__ import annotations

import pytest

from mimic.engine.builder import BuildOptions
from mimic.engine.gpu import gpu_available
from mimic.engine.refit import REFIT_KNOWN_ISSUE, options_from_manifest, refit_build_options, swap_weights
from mimic.errors import EngineError


def test_modes_map_to_the_right_flags():
    base = BuildOptions(target="tensorrt-rtx", optimization_level=2)
    swap = refit_build_options(base, "swap")
    assert swap.refittable and not swap.strip_plan  # REFIT: other weights allowed
    weightless = refit_build_options(base, "weightless")
    assert weightless.strip_plan and not weightless.refittable  # STRIP_PLAN + REFIT_IDENTICAL (builder)
    assert weightless.optimization_level == 2
    with pytest.raises(EngineError, match="unknown refit mode"):
        refit_build_options(base, "identical-ish")
    assert "REFIT_IDENTICAL" in REFIT_KNOWN_ISSUE and "\n" not in REFIT_KNOWN_ISSUE


def test_options_round_trip_through_a_manifest():
    from mimic.engine import cache_key as ck

    opts = BuildOptions(target="tensorrt-rtx", workspace_bytes=1 << 30, optimization_level=4, refittable=True, compute_capabilities=("8.6", "8.9"))
    manifest = {"key_inputs": {"build": ck.build_spec([{"x": ((1,), (2,), (3,))}], opts)}}
    back = options_from_manifest(manifest, refittable=False)
    assert back == BuildOptions(target="tensorrt-rtx", workspace_bytes=1 << 30, optimization_level=4, refittable=False, compute_capabilities=("8.6", "8.9"))


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU messages")
def test_gpu_only_paths_fail_cleanly_on_cpu(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from mimic.engine.build import build_engine_set

    with pytest.raises(EngineError, match="needs an NVIDIA GPU"):
        swap_weights(tmp_path, tmp_path / "unet.onnx")
    with pytest.raises(EngineError, match="refittable TensorRT-RTX builds need a GPU"):
        build_engine_set(tmp_path / "out", preset="tiny", target="tensorrt-rtx", refittable=True, stages=["unet"])
    assert not (tmp_path / "out").exists()
