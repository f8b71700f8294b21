"""One job's generation on any backend: encode -> denoise -> streamed decode.

Numerically this is the reference pipeline (same preprocessing, same random draws for a seed, same
fusion, guidance and Euler step), restructured for speed (see ``denoise.py``) and for bounded host
memory (decoded chunks go straight to the writer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from mimic.mimicmotion_ref import preprocess as pre
from mimic.mimicmotion_ref.config import GenerationConfig
from mimic.mimicmotion_ref.scheduler import make_schedule
from mimic.mimicmotion_ref.windows import tile_noise
from mimic.runtime.backend_api import Backend
from mimic.runtime.denoise import Conditioning, check_finite, denoise
from mimic.runtime.model_info import ModelInfo
from mimic.runtime.pose_source import PoseImages, as_pose_images


@dataclass(frozen=True)
class Prepared:
    """Everything the denoiser needs for one job (CPU side work done)."""

    cond: Conditioning
    poses: PoseImages  # F pose images (uint8), served per window
    latents: torch.Tensor  # (1, F, 4, h, w) initial, already scaled by the init sigma


class Renderer:
    """Stateless over jobs: holds a backend and the model facts; safe to reuse for many jobs."""

    def __init__(self, backend: Backend, info: ModelInfo, dtype: torch.dtype):
        self.backend = backend
        self.info = info
        self.dtype = dtype

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @torch.no_grad()
    def prepare(self, reference: np.ndarray, poses: PoseImages | np.ndarray, config: GenerationConfig, generator: torch.Generator | None, latents: torch.Tensor | None = None, stream=None) -> Prepared:
        poses = as_pose_images(poses)
        num_frames, height, width = check_job_shapes(reference, poses, config.window)
        dt, dev = self.dtype, self.device
        reference = pre.upstream_pixel_roundtrip(reference, dt)
        clip = pre.clip_pixels(reference, self.info.clip_mean, self.info.clip_std).to(dev, dt)
        embeds = self.backend.run("image_encoder", {"pixel_values": clip}, stream)["image_embeds"].to(dt).unsqueeze(1)
        pixels = pre.vae_pixels(reference)
        noise = torch.randn(pixels.shape, generator=generator, device=_gen_device(generator), dtype=pixels.dtype)
        pixels = (pixels.to(noise.device) + config.noise_aug_strength * noise).to(dev, dt)
        ref_lat = self.backend.run("vae_encoder", {"image": pixels}, stream)["latent_mean"].to(dt)
        ids = torch.tensor([[config.fps_cond - 1, config.motion_bucket_id, config.noise_aug_strength]], dtype=dt, device=dev).repeat(2, 1)
        cond = Conditioning(
            image_embeds=torch.cat([torch.zeros_like(embeds), embeds]),
            ref_latents=torch.cat([torch.zeros_like(ref_lat), ref_lat]),
            added_time_ids=ids,
        )
        schedule = make_schedule(config.steps, self.info.scheduler)
        shape = (1, num_frames, self.info.latent_channels, height // 8, width // 8)
        if latents is None:
            window_noise = torch.randn((1, config.window, *shape[2:]), generator=generator, device=_gen_device(generator), dtype=dt)
            latents = tile_noise(window_noise, num_frames)
        latents = latents.to(dev, dt) * schedule.init_noise_sigma
        return Prepared(cond=cond, poses=poses, latents=latents)

    @torch.no_grad()
    def denoise(self, prepared: Prepared, config: GenerationConfig, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Final latents. Consumes ``prepared``: its latents buffer is reused as working memory."""
        return denoise(
            self.backend,
            prepared.cond,
            prepared.poses,
            prepared.latents,
            make_schedule(config.steps, self.info.scheduler),
            config.window,
            config.overlap,
            config.guidance_min,
            config.guidance_max,
            self.dtype,
            progress,
        )

    @torch.no_grad()
    def decode_chunks(self, latents: torch.Tensor, chunk: int, stream=None):
        """Yield (first_frame_index, uint8 (n, 3, H, W)) per temporal-decoder chunk, frame 0 included."""
        z = latents.flatten(0, 1) / self.info.scaling_factor
        for s in range(0, z.shape[0], chunk):
            frames = self.backend.run("vae_decoder", {"latents": z[s : s + chunk]}, stream)["frames"]
            check_finite(frames, f"decoded frames {s}..{s + frames.shape[0] - 1}")
            frames = frames.float().cpu()
            yield s, ((frames / 2 + 0.5).clamp(0, 1) * 255.0).to(torch.uint8).numpy()


def check_job_shapes(reference: np.ndarray, poses: PoseImages, window: int) -> tuple[int, int, int]:
    """(F, H, W) after the checks the released pipeline needs (multiples of 64, F >= T)."""
    from mimic.mimicmotion_ref.pipeline import check_shapes

    return check_shapes(reference, len(poses), (poses.height, poses.width), window)


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")
