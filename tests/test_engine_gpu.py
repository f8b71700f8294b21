"""Engine execution and refit on a GPU: TensorRTBackend vs onnxruntime, CUDA graphs, streams, shared
device memory, deserialization failures, and a UNet checkpoint swap verified against a fresh build.

Every test here carries ``@pytest.mark.gpu`` and skips (with the reason) where there is no GPU or
no TensorRT flavour that can run on it (TensorRT-RTX plans do not run on sm_90/sm_100).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mimic.engine.gpu import RTX_DEFAULT_SMS, can_execute, gpu_info, trt_info
from mimic.errors import EngineError

pytestmark = pytest.mark.gpu

TINY_STAGES = ("image_encoder", "pose_net", "unet", "vae_decoder")


def usable_target() -> str | None:
    gpu = gpu_info(0)
    if gpu is None:
        return None
    if can_execute("tensorrt"):
        return "tensorrt"
    if can_execute("tensorrt-rtx") and gpu.compute_capability in RTX_DEFAULT_SMS:
        return "tensorrt-rtx"
    return None


@pytest.fixture(scope="module")
def target() -> str:
    t = usable_target()
    if t is None:
        gpu = gpu_info(0)
        pytest.skip(f"no TensorRT flavour can run engines here (GPU: {gpu.describe() if gpu else 'none'}; "
                    f"tensorrt {'present' if trt_info('tensorrt') else 'absent'}, tensorrt-rtx {'present' if trt_info('tensorrt-rtx') else 'absent'})")
    return t


@pytest.fixture(scope="module")
def engines(tiny_cache, tmp_path_factory, target) -> Path:
    from mimic.engine.command import build_engines_command

    out = tmp_path_factory.mktemp("gpu-engines")
    build_engines_command(out, preset="tiny", target=target, stages=TINY_STAGES, workspace_gb=2)
    return out


@pytest.fixture
def backend(engines):
    from mimic.runtime.backend_trt import TensorRTBackend

    b = TensorRTBackend(engines, device="cuda", stages=TINY_STAGES)
    yield b
    b.close()


def opt_feeds(engines: Path, stage: str, seed: int = 0) -> dict[str, torch.Tensor]:
    from mimic.engine.store import EngineStore
    from mimic.engine.validate import random_feeds

    m = EngineStore(engines).read_manifest(stage)
    return {k: v.cuda() for k, v in random_feeds(stage, m, "opt", seed, {}).items()}


def test_engines_match_onnxruntime(engines):
    from mimic.engine.validate import validate_engines

    rows = validate_engines(engines, stages=TINY_STAGES, points=("min", "opt", "max"))
    assert rows and all(r.passed for r in rows)


def test_backend_outputs_and_shared_memory(backend, engines):
    feeds = opt_feeds(engines, "unet")
    out = backend.run("unet", feeds)["noise_pred"]
    assert out.is_cuda and out.dtype == torch.float16 and out.shape == feeds["sample"].shape[:2] + (4,) + feeds["sample"].shape[3:]
    from mimic.engine.runner import shared_memory_size

    sizes = [r.device_memory_size for r in backend._runners.values()]
    assert len(sizes) == len(TINY_STAGES)
    # one block for all engines, sized by the largest: not one per engine
    assert backend.memory.allocated == backend.device_memory_bytes == shared_memory_size(sizes)


def test_input_checks_before_tensorrt(backend, engines):
    feeds = opt_feeds(engines, "unet")
    big = dict(feeds, sample=torch.zeros(2, 99, *feeds["sample"].shape[2:], device="cuda"))
    with pytest.raises(EngineError, match="outside the engine's profile"):
        backend.run("unet", big)
    with pytest.raises(EngineError, match="missing 'timestep'"):
        backend.run("unet", {k: v for k, v in feeds.items() if k != "timestep"})


def test_side_stream_and_cuda_graph_match_plain_run(engines):
    from mimic.runtime.backend_trt import TensorRTBackend

    feeds = opt_feeds(engines, "vae_decoder")
    plain = TensorRTBackend(engines, stages=["vae_decoder"])
    ref = plain.run("vae_decoder", feeds)["frames"].clone()
    side = torch.cuda.Stream()
    got = plain.run("vae_decoder", feeds, stream=side)["frames"]
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    plain.close()
    graphed = TensorRTBackend(engines, stages=["vae_decoder"], use_cuda_graph=True)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        first = graphed.run("vae_decoder", feeds)["frames"]  # captures
        second = graphed.run("vae_decoder", feeds)["frames"]  # replays
    torch.cuda.synchronize()
    torch.testing.assert_close(first, ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(second, ref, rtol=1e-3, atol=1e-3)
    graphed.close()


def test_garbage_plan_is_an_error_not_none(target):
    from mimic.engine.builder import load_trt
    from mimic.engine.runner import deserialize_engine

    trt = load_trt(target)
    with pytest.raises(EngineError, match="could not deserialize|invalid"):
        deserialize_engine(trt, b"\x00garbage" * 1000, "garbage.plan")


def test_foreign_gpu_in_manifest_refused_before_deserialize(engines, tmp_path, monkeypatch):
    import shutil

    from mimic.engine import runner
    from mimic.runtime.backend_trt import TensorRTBackend

    out = Path(shutil.copytree(engines, tmp_path / "e"))
    m = json.loads((out / "pose_net.manifest.json").read_text())
    m["gpu"] = {"name": "NVIDIA Imaginary 9000", "compute_capability": "1.0"} if m["tensorrt"]["flavour"] == "tensorrt" else {"name": "any", "compute_capability": ["1.0"]}
    (out / "pose_net.manifest.json").write_text(json.dumps(m))
    called = []
    monkeypatch.setattr(runner, "deserialize_engine", lambda *a, **k: called.append(a))
    with pytest.raises(EngineError, match="rebuild with `mimic build-engines"):
        TensorRTBackend(out, stages=["pose_net"])
    assert not called


def test_refit_swaps_checkpoint_without_rebuild(tiny_cache, tmp_path, target):
    """Build the UNet refittable from checkpoint A, refit with checkpoint B, compare with a fresh B build."""
    from mimic.engine.command import build_engines_command
    from mimic.engine.refit import swap_weights
    from mimic.runtime.backend_trt import TensorRTBackend
    from mimic.export.command import export_command
    from mimic.mimicmotion_ref.tiny import write_tiny_weights

    out = tmp_path / "refit"
    build_engines_command(out, preset="tiny", target=target, stages=["unet"], refittable=True)
    feeds = opt_feeds(out, "unet")
    a = TensorRTBackend(out, stages=["unet"])
    before = a.run("unet", feeds)["noise_pred"].float().clone()
    a.close()

    other = write_tiny_weights(tmp_path / "weights-b", seed=12345)  # same architecture, other values
    new_onnx = export_command(tmp_path / "onnx-b", layout=other, precision="fp16", stages=["unet"]).results[0].path
    manifest = swap_weights(out, new_onnx, "unet", verify=True)
    assert manifest["refit"]["verified_max_rel"] <= 1e-2

    b = TensorRTBackend(out, stages=["unet"])
    after = b.run("unet", feeds)["noise_pred"].float()
    b.close()
    assert (after - before).abs().max() > 1e-3  # the weights really changed
