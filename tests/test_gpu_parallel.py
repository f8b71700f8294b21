"""One job's windows over several CUDA workers: the same latents/frames as one worker, bit for bit.
``cuda:0,cuda:0`` (two workers on one GPU: threads, per-worker streams) runs on any GPU machine;
``cuda:0,cuda:1`` (peer copies between devices) needs two GPUs. Skipped without CUDA (``gpu``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_parallel import FakeBackend, _job

pytestmark = pytest.mark.gpu


def _lists():
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [pytest.param(["cuda:0", "cuda:0"], id="cuda0x2"),
            pytest.param(["cuda:0", "cuda:1"], id="cuda0+1", marks=pytest.mark.skipif(n < 2, reason=f"needs 2 GPUs, {n} here"))]


@pytest.mark.parametrize("devices", _lists())
@pytest.mark.parametrize("overlap", [2, 7])
def test_parallel_denoise_on_cuda_equals_one_worker(devices, overlap):
    from mimic.runtime.denoise import denoise
    from mimic.runtime.parallel import denoise_parallel

    plan, cond, poses, latents = _job(overlap=overlap, device="cuda:0")
    one = denoise(FakeBackend("cuda:0"), plan, cond, poses, latents.clone())
    many = denoise_parallel([FakeBackend(d) for d in devices], plan, cond, poses, latents.clone())
    assert many.device == torch.device("cuda:0") and torch.equal(one, many)


@pytest.mark.parametrize("devices", _lists())
def test_torch_cuda_workers_render_the_same_frames(devices, tiny_cache, tmp_path):
    import importlib.util

    missing = [m for m in ("diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (not installed here)")
    from dataclasses import replace

    from gpu_helpers import pose_frame_jobs, read_png_frames
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    job = pose_frame_jobs(tmp_path, 1)[0]
    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="torch", device=",".join(devices))) as mm:
        frames = {}
        for name, components in (("one", replace(mm.components, workers=())), ("many", mm.components)):
            from mimic.runtime.pipeline import generate

            out = tmp_path / name
            generate(components, replace(job, out=out))
            frames[name] = read_png_frames(out)
    assert np.array_equal(frames["one"], frames["many"])
