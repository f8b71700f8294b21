"""Windowed denoising with progressive latent fusion, as the reference does it but with less work
and bounded memory:

* classifier-free guidance as one batch-2 UNet call (zero pose latents for the unconditional half);
* PoseNet run once per window and its output reused by every step (within a memory budget);
* guidance applied per window before fusion. Guidance ``u + g_f (c - u)`` is linear with a
  per-frame scale, so fusing guided window outputs equals guiding the fused outputs (the
  reference's order) up to float rounding, and only one latent-sized accumulator is needed;
* the Euler step in fp32, in place, on the device; a NaN/Inf check after every step (a job fails
  loudly instead of writing black frames).
Working set per step: the latents, one accumulator and one temporary (plus one window).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from mimic.errors import NumericsError
from mimic.mimicmotion_ref.config import GenerationConfig
from mimic.mimicmotion_ref.preprocess import pose_pixels
from mimic.mimicmotion_ref.scheduler import Schedule, SchedulerConfig, make_schedule
from mimic.mimicmotion_ref.windows import guidance_scales, tent_weights, window_indices
from mimic.pose.images import PoseImages
from mimic.runtime.backend_api import Backend
from mimic.spec import StageName
from mimic.spec import TensorName as N


@dataclass(frozen=True)
class Conditioning:
    """Per-job conditioning, CFG halves stacked [uncond, cond]."""

    image_embeds: torch.Tensor  # (2, 1, D)
    ref_latents: torch.Tensor  # (2, 4, h, w) (not repeated over frames)
    added_time_ids: torch.Tensor  # (2, 3)


def default_pose_cache_budget(device: torch.device) -> int:
    """Device memory for cached PoseNet outputs: generous on a GPU; small on the CPU, where the
    cache would be host memory that grows with the video (beyond it PoseNet is recomputed)."""
    return 4 << 30 if device.type == "cuda" else 64 << 20


class PoseLatentCache:
    """PoseNet output per window, computed on first use and kept while under ``budget_bytes``;
    windows beyond the budget are recomputed when needed (bounded memory for any length)."""

    def __init__(self, backend: Backend, poses: PoseImages, windows: list[list[int]], dtype: torch.dtype, budget_bytes: int):
        self.backend, self.poses, self.windows, self.dtype, self.budget = backend, poses, windows, dtype, budget_bytes
        self._cache: dict[int, torch.Tensor] = {}
        self._bytes = 0
        self.computed = 0

    def get(self, j: int) -> torch.Tensor:
        hit = self._cache.get(j)
        if hit is not None:
            return hit
        images = pose_pixels(self.poses.get(self.windows[j]), self.dtype).to(self.backend.device)
        lat = self.backend.run(StageName.POSE_NET, {N.POSE_IMAGES: images})[N.POSE_LATENTS].to(self.dtype)
        self.computed += 1
        size = lat.numel() * lat.element_size()
        if self._bytes + size <= self.budget:
            self._cache[j] = lat
            self._bytes += size
        return lat


def check_finite(x: torch.Tensor, what: str, dtype: torch.dtype | None = None) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        hint = "try --precision fp32 or another backend" if (dtype or x.dtype) == torch.float16 else "try another backend"
        raise NumericsError(f"{bad} NaN/Inf values in {what}: stopping instead of writing broken frames ({hint})")


@dataclass(frozen=True)
class DenoisePlan:
    """Everything the windowed loop needs besides the tensors: made once per job by ``plan_denoise``."""

    schedule: Schedule
    windows: tuple[tuple[int, ...], ...]  # frame indices of each window (frame 0 = the reference, in every window)
    window: int
    guidance_min: float
    guidance_max: float
    dtype: torch.dtype
    pose_cache_bytes: int
    start_step: int = 0  # > 0: resuming from the latents saved after that many steps

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def total_calls(self) -> int:
        """UNet calls (one batched CFG pair each) = steps x windows."""
        return self.schedule.num_steps * len(self.windows)


def plan_denoise(num_frames: int, config: GenerationConfig, scheduler: SchedulerConfig, dtype: torch.dtype, device: torch.device,
                 pose_cache_bytes: int | None = None, start_step: int = 0) -> DenoisePlan:
    if not 0 <= start_step <= config.steps:
        raise ValueError(f"start step {start_step} outside 0..{config.steps}")
    return DenoisePlan(
        schedule=make_schedule(config.steps, scheduler),
        windows=tuple(tuple(w) for w in window_indices(num_frames, config.window, config.overlap)),
        window=config.window,
        guidance_min=config.guidance_min,
        guidance_max=config.guidance_max,
        dtype=dtype,
        pose_cache_bytes=default_pose_cache_budget(device) if pose_cache_bytes is None else pose_cache_bytes,
        start_step=start_step,
    )


class StepHooks(Protocol):
    def on_progress(self, done: int, total: int) -> None: ...

    def on_step_end(self, step: int, num_steps: int, latents: torch.Tensor) -> None: ...


def denoise(backend: Backend, plan: DenoisePlan, cond: Conditioning, poses: PoseImages, latents: torch.Tensor, hooks: StepHooks | None = None) -> torch.Tensor:
    """latents (1, F, 4, h, w), already scaled by the init sigma -> final latents (same shape).

    The latents stay in ``plan.dtype`` between steps (as the reference's do); each step's update is
    computed in fp32. Consumes ``latents``: its memory is reused as the accumulator.
    """
    device, dtype, window, schedule = backend.device, plan.dtype, plan.window, plan.schedule
    num_frames = latents.shape[1]
    windows = [list(w) for w in plan.windows]
    weights = tent_weights(window, dtype=dtype, device=device)
    w5 = weights.view(1, window, 1, 1, 1)
    count = torch.zeros(num_frames, dtype=dtype, device=device)
    for idx in windows:
        count[idx] += weights
    scales = guidance_scales(num_frames, plan.guidance_min, plan.guidance_max, dtype=dtype, device=device)
    ref_lat = cond.ref_latents.to(device, dtype).unsqueeze(1).expand(2, window, -1, -1, -1)
    embeds = cond.image_embeds.to(device, dtype)
    ids = cond.added_time_ids.to(device, dtype)
    pose_cache = PoseLatentCache(backend, poses, windows, dtype, plan.pose_cache_bytes)
    total = plan.total_calls
    acc = torch.empty(latents.shape, dtype=dtype, device=device)
    for i in range(plan.start_step, schedule.num_steps):
        sigma = schedule.sigmas[i].to(device)
        sigma_next = schedule.sigmas[i + 1].to(device)
        c_in = 1.0 / ((sigma**2 + 1) ** 0.5)
        t = schedule.timesteps[i].to(device).expand(2)
        acc.zero_()
        for j, idx in enumerate(windows):
            xw = (latents[:, idx] * c_in).to(dtype)
            pose = pose_cache.get(j)
            feeds = {
                N.SAMPLE: torch.cat([xw.expand(2, -1, -1, -1, -1), ref_lat], dim=2),
                N.TIMESTEP: t,
                N.ENCODER_HIDDEN_STATES: embeds,
                N.ADDED_TIME_IDS: ids,
                N.POSE_LATENTS: torch.cat([torch.zeros_like(pose), pose]),
            }
            out = backend.run(StageName.UNET, feeds)[N.NOISE_PRED].to(dtype)
            uncond, cond_pred = out[:1], out[1:]
            acc[:, idx] += (uncond + scales[:, idx] * (cond_pred - uncond)) * w5
            if hooks is not None:
                hooks.on_progress(i * len(windows) + j + 1, total)
        acc /= count[None, :, None, None, None]
        # the step may return ``acc`` itself (fp32): the old latents' memory becomes the next accumulator
        latents, acc = euler_step_inplace(acc, latents, sigma, sigma_next), latents
        check_finite(latents, f"the latents after step {i + 1}/{schedule.num_steps}", dtype)
        if hooks is not None:
            hooks.on_step_end(i + 1, schedule.num_steps, latents)
    return latents


def euler_step_inplace(model_output: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """The reference's v-prediction Euler step without a latent-sized temporary.

    x0 = v c_out + x c_skip and x' = x + (x - x0)(s' - s)/s combine to
    x' = x (1 + r - r c_skip) - v r c_out with r = (s' - s)/s: one scaled in-place multiply and one
    ``add_(x, alpha=...)``. Same arithmetic as ``scheduler.euler_step`` up to float rounding (fp32).
    Overwrites ``model_output`` when it is fp32.
    """
    s, s_next = float(sigma), float(sigma_next)
    c_out = -s / (s * s + 1) ** 0.5
    c_skip = 1.0 / (s * s + 1)
    r = (s_next - s) / s
    x = sample.to(torch.float32)
    out = model_output.to(torch.float32)
    out.mul_(-r * c_out).add_(x, alpha=1.0 + r - r * c_skip)
    return out.to(model_output.dtype)
