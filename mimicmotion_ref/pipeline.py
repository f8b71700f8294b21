"""The released MimicMotion 1.1 generation, reproduced step by step (spec 3).

This is the oracle every optimised path is compared against: it runs the way the released code
runs (two batch-1 UNet calls per window per step, PoseNet recomputed every step, fp16 or fp32 as
given) and draws random numbers in the released order and shapes, so a seeded ``torch.Generator``
on the same device and dtype reproduces upstream's frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from mimic.errors import InputError
from mimic.model import preprocess as pre
from mimic.model.config import GenerationConfig
from mimic.model.models import RefModels
from mimic.model.scheduler import discard_step_noise, euler_step, make_schedule, scale_model_input
from mimic.model.windows import check_inputs, guidance_scales, tent_weights, tile_noise, window_indices


@dataclass(frozen=True)
class ReferenceResult:
    frames: np.ndarray  # (N, 3, H, W) uint8, the reference slot already dropped
    latents: torch.Tensor  # (1, F, 4, h, w) final denoised latents (before 1/scaling_factor)


class MimicMotionReference:
    """``MimicMotionReference(models)(reference, poses, config, generator)``.

    ``reference``: the cropped reference image, RGB uint8 (H, W, 3) (see ``preprocess.prepare_reference``).
    ``poses``: drawn pose images uint8 (F, 3, H, W), frame 0 = the reference's own pose.
    ``latents``: optional unit-variance initial noise (1, F, 4, h, w); scaled by the scheduler's
    init sigma as diffusers does. Without it, one window of noise is drawn and tiled (period T).
    """

    def __init__(self, models: RefModels):
        self.models = models

    @torch.no_grad()
    def encode_image(self, reference: np.ndarray) -> torch.Tensor:
        m = self.models
        pixels = pre.clip_pixels(reference, m.clip_mean, m.clip_std).to(m.device, m.dtype)
        return m.image_encoder(pixels).image_embeds.unsqueeze(1)  # (1, 1, D)

    @torch.no_grad()
    def encode_latents(self, reference: np.ndarray, noise_aug_strength: float, generator) -> torch.Tensor:
        m = self.models
        pixels = pre.vae_pixels(reference).to(m.device)
        noise = torch.randn(pixels.shape, generator=generator, device=_gen_device(generator, m.device), dtype=pixels.dtype).to(m.device)
        pixels = pixels + noise_aug_strength * noise
        return m.vae.encode(pixels.to(m.dtype)).latent_dist.mode()  # (1, 4, h, w), unscaled

    @torch.no_grad()
    def __call__(
        self,
        reference: np.ndarray,
        poses: np.ndarray,
        config: GenerationConfig = GenerationConfig(),
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ReferenceResult:
        m = self.models
        num_frames, height, width = check_inputs(reference, poses, config.window)
        dtype, device = m.dtype, m.device
        reference = pre.upstream_pixel_roundtrip(reference, dtype)

        # 1. CLIP image embedding; the unconditional half is zeros.
        embeds = self.encode_image(reference)
        embeds = torch.cat([torch.zeros_like(embeds), embeds])

        # 2. Reference latents (posterior mean, unscaled) after optional pixel noise augmentation.
        ref_lat = self.encode_latents(reference, config.noise_aug_strength, generator).to(embeds.dtype)
        ref_lat = torch.cat([torch.zeros_like(ref_lat), ref_lat]).unsqueeze(1).repeat(1, num_frames, 1, 1, 1)

        # 3. Added time ids [fps-1, motion bucket, noise aug], duplicated for CFG.
        ids = torch.tensor([[config.fps_cond - 1, config.motion_bucket_id, config.noise_aug_strength]], dtype=embeds.dtype, device=device)
        ids = ids.repeat(2, 1)

        # 4. Schedule and initial noise (one window drawn, tiled with period T).
        schedule = make_schedule(config.steps, m.scheduler, config.schedule)
        lat_shape = (1, num_frames, 4, height // 8, width // 8)
        if latents is None:
            noise = torch.randn((1, config.window, *lat_shape[2:]), generator=generator, device=_gen_device(generator, device), dtype=embeds.dtype)
            latents = tile_noise(noise.to(device), num_frames)
        elif tuple(latents.shape) != lat_shape:
            raise InputError(f"latents must have shape {lat_shape}, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=embeds.dtype) * schedule.init_noise_sigma

        # 5. Denoising: windows fused with tent weights every step, then CFG, then one Euler step.
        pose_px = pre.pose_pixels(poses, dtype).to(device)
        windows = window_indices(num_frames, config.window, config.overlap)
        weights = tent_weights(config.window, dtype=dtype, device=device)
        scales = guidance_scales(num_frames, config.guidance_min, config.guidance_max, dtype=latents.dtype, device=device)
        total = config.steps * len(windows)
        for i in range(config.steps):
            x_in = scale_model_input(torch.cat([latents, latents]), schedule, i)
            x_in = torch.cat([x_in, ref_lat], dim=2)
            t = schedule.timesteps[i].to(device)
            acc = torch.zeros(2, num_frames, *lat_shape[2:], dtype=dtype, device=device)
            count = torch.zeros(num_frames, dtype=dtype, device=device)
            for j, idx in enumerate(windows):
                pose_lat = m.pose_net(pose_px[idx])
                u = m.unet(x_in[:1, idx], t, embeds[:1], ids[:1], pose_latents=None)
                c = m.unet(x_in[1:, idx], t, embeds[1:], ids[1:], pose_latents=pose_lat)
                w = weights[:, None, None, None]
                acc[0:1, idx] += u * w
                acc[1:2, idx] += c * w
                count[idx] += weights
                if progress is not None:
                    progress(i * len(windows) + j + 1, total)
            acc /= count[None, :, None, None, None]
            uncond, cond = acc.chunk(2)
            guided = uncond + scales * (cond - uncond)
            discard_step_noise(guided, generator)
            latents = euler_step(guided, latents, schedule, i)

        frames = self.decode(latents, config.decode_chunk)
        return ReferenceResult(frames=frames[1:], latents=latents)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk: int) -> np.ndarray:
        """Temporal decode in chunks of ``chunk`` frames; (x/2+0.5).clamp*255 truncated to uint8."""
        m = self.models
        z = latents.flatten(0, 1) / m.scaling_factor
        out = [m.vae.decode(z[s : s + chunk], num_frames=z[s : s + chunk].shape[0]).sample.cpu() for s in range(0, z.shape[0], chunk)]
        frames = torch.cat(out).float()
        return ((frames / 2 + 0.5).clamp(0, 1) * 255.0).to(torch.uint8).numpy()


def _gen_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback
