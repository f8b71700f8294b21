"""The denoising loop's per-call overheads (CPU, with a recording backend).

The UNet's CFG feeds are two buffers allocated once per job and written in place (at full size the
pose pair alone is ~850 MB: a fresh ``torch.cat`` per window per step was that much allocation and
copying), the stream given to ``denoise`` reaches every backend call, and the schedule's sigmas are
never sent to the device (reading them back was a host sync per step). A backend that keeps what it
was given (as an asynchronous engine does until it is done) sees the same buffers on every call.
The numerics of the loop are covered by ``test_runtime_core.py`` (reference parity, bit-exact CPU).
"""
from __future__ import annotations

import numpy as np
import torch

from mimic.model.config import GenerationConfig
from mimic.model.scheduler import SchedulerConfig
from mimic.pose.images import ArrayPoses
from mimic.runtime.denoise import Conditioning, denoise, plan_denoise
from mimic.spec import StageName
from mimic.spec import TensorName as N


class KeepingBackend:
    """Keeps every feed it was given (an engine may still read them after ``run`` returns)."""

    name = "fake"
    device = torch.device("cpu")

    def __init__(self):
        self.calls: list[tuple[str, dict, object]] = []

    def run(self, stage, feeds, stream=None):
        self.calls.append((stage, dict(feeds), stream))
        if stage == StageName.POSE_NET:
            x = feeds[N.POSE_IMAGES]
            return {N.POSE_LATENTS: x[:, :1].repeat(1, 8, 1, 1)[:, :, ::8, ::8].contiguous()}
        sample = feeds[N.SAMPLE]
        return {N.NOISE_PRED: sample[:, :, :4] * 0.5 + feeds[N.POSE_LATENTS].mean() * 0}


def test_cfg_feed_buffers_are_reused_and_the_stream_reaches_every_call():
    config = GenerationConfig(steps=3, window=4, overlap=1)
    frames, h, w = 10, 8, 8
    plan = plan_denoise(frames, config, SchedulerConfig(), torch.float32, torch.device("cpu"))
    assert len(plan.windows) >= 3
    cond = Conditioning(torch.zeros(2, 1, 8), torch.randn(2, 4, h, w), torch.zeros(2, 3))
    poses = ArrayPoses((np.random.default_rng(0).random((frames, 3, h * 8, w * 8)) * 255).astype(np.uint8))
    backend = KeepingBackend()
    stream = object()  # a stand-in: denoise only hands it on
    latents = denoise(backend, plan, cond, poses, torch.randn(1, frames, 4, h, w), stream=stream)
    assert torch.isfinite(latents).all()
    unet = [feeds for stage, feeds, _ in backend.calls if stage == StageName.UNET]
    assert len(unet) == plan.total_calls
    assert len({f[N.SAMPLE].data_ptr() for f in unet}) == 1, "a new sample tensor per UNet call"
    assert len({f[N.POSE_LATENTS].data_ptr() for f in unet}) == 1, "a new CFG pose pair per UNet call"
    assert all(s is stream for _, _, s in backend.calls), "a backend call without the job's stream"
    # the pair's unconditional half stays zero; the conditional half is the current window's pose
    pair = unet[-1][N.POSE_LATENTS]
    assert pair.shape[0] == 2 * config.window and not pair[: config.window].any()
    assert plan.schedule.sigmas.device.type == "cpu"


def test_pose_images_of_any_memory_layout_give_the_same_contiguous_posenet_input():
    """Pose images read from a video arrive channels-last strided; on the CPU a convolution's last bits
    depend on its input's layout, so PoseNet's input is made contiguous (the same frames whatever the source)."""
    from mimic.model.preprocess import pose_pixels

    hwc = (np.random.default_rng(1).random((3, 16, 24, 3)) * 255).astype(np.uint8)
    strided = hwc.transpose(0, 3, 1, 2)  # (F, 3, H, W) view of HWC memory, as a decoded video gives
    x = pose_pixels(strided, torch.float32)
    assert x.is_contiguous() and torch.equal(x, pose_pixels(np.ascontiguousarray(strided), torch.float32))
