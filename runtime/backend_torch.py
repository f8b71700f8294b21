"""The ``torch`` backend: the reference modules behind the stage interface (CPU or CUDA; fp16 on
CUDA, with PyTorch's SDPA attention, which diffusers uses by default)."""
from __future__ import annotations

import torch

from mimic.errors import InputError
from mimic.mimicmotion_ref.models import RefModels


class TorchBackend:
    name = "torch"

    def __init__(self, models: RefModels):
        self.models = models
        self.device = models.device
        self.dtype = models.dtype

    def _stream_ctx(self, stream):
        return torch.cuda.stream(stream) if stream is not None else _null()

    @torch.no_grad()
    def run(self, stage: str, feeds: dict[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]:
        m, dt = self.models, self.dtype
        with self._stream_ctx(stream):
            if stage == "image_encoder":
                return {"image_embeds": m.image_encoder(feeds["pixel_values"].to(self.device, dt)).image_embeds}
            if stage == "vae_encoder":
                return {"latent_mean": m.vae.encode(feeds["image"].to(self.device, dt)).latent_dist.mode()}
            if stage == "pose_net":
                return {"pose_latents": m.pose_net(feeds["pose_images"].to(self.device, dt))}
            if stage == "unet":
                out = m.unet(
                    feeds["sample"].to(self.device, dt),
                    feeds["timestep"].to(self.device, torch.float32),
                    feeds["encoder_hidden_states"].to(self.device, dt),
                    feeds["added_time_ids"].to(self.device, dt),
                    pose_latents=feeds["pose_latents"].to(self.device, dt),
                )
                return {"noise_pred": out}
            if stage == "vae_decoder":
                z = feeds["latents"].to(self.device, dt)
                return {"frames": m.vae.decode(z, num_frames=z.shape[0]).sample}
        raise InputError(f"unknown stage {stage!r}")

    def close(self) -> None:
        self.models = None  # type: ignore[assignment]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
