"""Windowed denoising with progressive latent fusion, as the reference does it but with less work:
classifier-free guidance as one batch-2 UNet call (zero pose latents for the unconditional half),
PoseNet run once per window and reused by every step, Euler math in fp32 on the device, and a
NaN/Inf check after every step (a job fails loudly instead of writing black frames)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from mimic.errors import NumericsError
from mimic.mimicmotion_ref.scheduler import Schedule, euler_step, scale_model_input
from mimic.mimicmotion_ref.windows import guidance_scales, tent_weights, window_indices
from mimic.runtime.backend_api import Backend


@dataclass(frozen=True)
class Conditioning:
    """Per-job conditioning, CFG halves stacked [uncond, cond]."""

    image_embeds: torch.Tensor  # (2, 1, D)
    ref_latents: torch.Tensor  # (2, 4, h, w) (not yet repeated over frames)
    added_time_ids: torch.Tensor  # (2, 3)


class PoseLatentCache:
    """PoseNet output per window, computed on first use and reused across steps.

    Stored on ``device`` while the total stays under ``budget_bytes``, otherwise on the host
    (copied back per use), so very long videos do not exhaust device memory.
    """

    def __init__(self, backend: Backend, pose_images: torch.Tensor, windows: list[list[int]], budget_bytes: int = 4 << 30):
        self.backend = backend
        self.pose_images = pose_images  # (F, 3, H, W) in [-1, 1], on any device
        self.windows = windows
        self.budget = budget_bytes
        self._cache: dict[int, torch.Tensor] = {}
        self._bytes = 0

    def get(self, j: int) -> torch.Tensor:
        hit = self._cache.get(j)
        if hit is not None:
            return hit.to(self.backend.device, non_blocking=True)
        idx = self.windows[j]
        lat = self.backend.run("pose_net", {"pose_images": self.pose_images[idx].to(self.backend.device)})["pose_latents"]
        size = lat.numel() * lat.element_size()
        keep = lat if self._bytes + size <= self.budget else lat.to("cpu")
        self._bytes += size if keep is lat else 0
        self._cache[j] = keep
        return lat


def check_finite(x: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise NumericsError(f"{bad} NaN/Inf values in {what}: stopping instead of writing broken frames (try fp32 or another backend)")


def denoise(
    backend: Backend,
    cond: Conditioning,
    pose_images: torch.Tensor,
    latents: torch.Tensor,
    schedule: Schedule,
    window: int,
    overlap: int,
    guidance_min: float,
    guidance_max: float,
    dtype: torch.dtype,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """latents (1, F, 4, h, w), already scaled by the init sigma -> final latents (same shape)."""
    device = backend.device
    num_frames = latents.shape[1]
    windows = window_indices(num_frames, window, overlap)
    weights = tent_weights(window, dtype=dtype, device=device)
    w5 = weights.view(1, window, 1, 1, 1)
    count = torch.zeros(num_frames, dtype=dtype, device=device)
    for idx in windows:
        count[idx] += weights
    scales = guidance_scales(num_frames, guidance_min, guidance_max, dtype=latents.dtype, device=device)
    ref_lat = cond.ref_latents.to(device, dtype).unsqueeze(1)  # (2, 1, 4, h, w)
    embeds = cond.image_embeds.to(device, dtype)
    ids = cond.added_time_ids.to(device, dtype)
    poses = PoseLatentCache(backend, pose_images, windows)
    zero_pose: torch.Tensor | None = None
    total = schedule.num_steps * len(windows)
    for i in range(schedule.num_steps):
        x = scale_model_input(latents, schedule, i)
        t = schedule.timesteps[i].to(device).expand(2)
        acc = torch.zeros(2, num_frames, *latents.shape[2:], dtype=dtype, device=device)
        for j, idx in enumerate(windows):
            xw = x[:, idx].expand(2, -1, -1, -1, -1)
            sample = torch.cat([xw, ref_lat.expand(2, window, -1, -1, -1)], dim=2)
            pose = poses.get(j)
            if zero_pose is None:
                zero_pose = torch.zeros_like(pose)
            feeds = {
                "sample": sample,
                "timestep": t,
                "encoder_hidden_states": embeds,
                "added_time_ids": ids,
                "pose_latents": torch.cat([zero_pose, pose]),
            }
            out = backend.run("unet", feeds)["noise_pred"].to(dtype)
            acc[:, idx] += out * w5
            if progress is not None:
                progress(i * len(windows) + j + 1, total)
        acc /= count[None, :, None, None, None]
        uncond, cond_pred = acc.chunk(2)
        guided = uncond + scales * (cond_pred - uncond)
        latents = euler_step(guided, latents, schedule, i)
        check_finite(latents, f"the latents after step {i + 1}/{schedule.num_steps}")
    return latents
