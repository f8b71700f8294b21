"""The set of modules one generation needs, loaded once (see ``weights.py``)."""
from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import torch

from mimic.model.scheduler import SchedulerConfig

if TYPE_CHECKING:  # diffusers/transformers load with the weights (``weights.py``), not with this module
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionModelWithProjection

    from mimic.model.pose_net import PoseNet
    from mimic.model.unet import PoseUNet


@dataclass(frozen=True)
class RefModels:
    unet: PoseUNet
    pose_net: PoseNet
    vae: AutoencoderKLTemporalDecoder
    image_encoder: CLIPVisionModelWithProjection
    scheduler: SchedulerConfig
    clip_mean: tuple[float, float, float]
    clip_std: tuple[float, float, float]

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "RefModels":
        from diffusers.utils import logging as diffusers_logging

        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # diffusers warns on every dtype cast of a model
        try:
            for m in (self.unet, self.pose_net, self.vae, self.image_encoder):
                m.to(device=device, dtype=dtype).eval()
        finally:
            diffusers_logging.set_verbosity(level)
        return self
