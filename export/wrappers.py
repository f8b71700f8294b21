"""Thin adapters that give each stage a flat ``forward(*inputs) -> output`` for export.

Positional arguments follow the stage spec's input order and the return value its output order,
so ``torch.onnx.export(wrapper, args, input_names=spec.input_names, ...)`` lines up by construction.
Each wrapper keeps the wrapped model as ``self.model``; the exporter strips that ``model.`` prefix
from initializer names so ONNX weights carry the checkpoint's own key names (refit maps by name).
"""
from __future__ import annotations

import torch
from torch import nn

from mimic.spec import GRAPH_CACHE_DEPTH, StageName

WRAPPED_PREFIX = "model."


class StageWrapper(nn.Module):
    stage = ""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


class ImageEncoderWrapper(StageWrapper):
    """CLIPVisionModelWithProjection -> ``image_embeds`` (B, D)."""

    stage = StageName.IMAGE_ENCODER

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).image_embeds


class VaeEncoderWrapper(StageWrapper):
    """AutoencoderKL(TemporalDecoder).encode -> posterior mean (``latent_dist.mode()``), unscaled."""

    stage = StageName.VAE_ENCODER

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode(image).latent_dist.mode()


class PoseNetWrapper(StageWrapper):
    stage = StageName.POSE_NET

    def forward(self, pose_images: torch.Tensor) -> torch.Tensor:
        return self.model(pose_images)


class UNetWrapper(StageWrapper):
    """PoseUNet with every input positional (``pose_latents`` is always given: zeros == None)."""

    stage = StageName.UNET

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, pose_latents) -> torch.Tensor:
        return self.model(sample, timestep, encoder_hidden_states, added_time_ids, pose_latents=pose_latents)


class UNetFeaturesWrapper(StageWrapper):
    """Deep-feature caching, full step: PoseUNet -> (``noise_pred``, ``deep_features``) at the graphs'
    fixed depth (``mimic.spec.GRAPH_CACHE_DEPTH``); ``noise_pred`` is the plain UNet's."""

    stage = StageName.UNET_FEATURES

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, pose_latents) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_features(sample, timestep, encoder_hidden_states, added_time_ids, pose_latents, GRAPH_CACHE_DEPTH)


class UNetShallowWrapper(StageWrapper):
    """Deep-feature caching, cheap step: the UNet's shallow part around ``deep_features`` (same depth)."""

    stage = StageName.UNET_SHALLOW

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, pose_latents, deep_features) -> torch.Tensor:
        return self.model.forward_shallow(sample, timestep, encoder_hidden_states, added_time_ids, pose_latents, deep_features,
                                          GRAPH_CACHE_DEPTH)


class VaeDecoderWrapper(StageWrapper):
    """Temporal decode of all N input frames as one clip.

    ``num_frames`` comes from ``latents.shape[0]`` so the exporter traces it as a graph value; a
    Python int would be baked in as a constant and other frame counts would decode wrongly.
    """

    stage = StageName.VAE_DECODER

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.decode(latents, num_frames=latents.shape[0]).sample


WRAPPERS: dict[str, type[StageWrapper]] = {
    w.stage: w
    for w in (ImageEncoderWrapper, VaeEncoderWrapper, PoseNetWrapper, UNetWrapper, UNetFeaturesWrapper, UNetShallowWrapper, VaeDecoderWrapper)
}


def wrap(stage: str, model: nn.Module) -> StageWrapper:
    """The stage's wrapper around ``model`` (returned as is when it already is that wrapper)."""
    cls = WRAPPERS.get(stage)
    if cls is None:
        raise KeyError(f"no export wrapper for stage {stage!r}")
    if isinstance(model, cls):
        return model
    if isinstance(model, StageWrapper):
        raise TypeError(f"got a {type(model).__name__} for stage {stage!r}")
    return cls(model).eval()
