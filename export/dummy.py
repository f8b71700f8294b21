"""Torch-side helpers over the torch-free spec: graph dtypes as torch dtypes, deterministic
realistically-ranged dummy inputs (export tracing, validation, engine checks, benchmarks), and the
model dimensions of a single stage's module (export of one stage without a weights folder)."""
from __future__ import annotations

from typing import Mapping

import torch

from mimic.spec import ModelDims, Shape, ShapePoint, StageName, StageSpec, TensorSpec


def torch_dtype(tensor: TensorSpec, precision: str) -> torch.dtype:
    return getattr(torch, tensor.dtype(precision))


def draw(kind: str, shape: Shape, gen: torch.Generator) -> torch.Tensor:
    """Random values in the range a real input of this ``kind`` has."""
    if kind == "pixels":  # images in [-1, 1]
        return torch.rand(shape, generator=gen) * 2 - 1
    if kind == "timestep":  # c_noise = 0.25 ln(sigma), sigma in [0.002, 700]
        return torch.rand(shape, generator=gen) * 3.2 - 1.55
    if kind == "time_ids":  # [fps - 1, motion bucket id, noise augmentation]
        lo, hi = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([29.0, 255.0, 0.1])
        return lo + torch.rand(shape, generator=gen) * (hi - lo)
    if kind == "det_pixels":  # DWPose detector: raw 0..255
        return torch.rand(shape, generator=gen) * 255
    return torch.randn(shape, generator=gen)


def dummy_inputs(spec: StageSpec, point: ShapePoint, dims: ModelDims, precision: str = "fp32", seed: int = 0,
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Deterministic, realistically-ranged inputs in the graph's dtypes (meta device allowed)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for t in spec.inputs:
        x = draw(t.kind, t.shape(point, dims), gen)
        out[t.name] = x.to(device=device, dtype=torch_dtype(t, precision))
    return out


def dims_from_module(stage: str, module: torch.nn.Module) -> ModelDims:
    """The dims one stage's graph needs, from its module (a raw model or an export wrapper); the
    dims a stage does not use keep the released values."""
    module = getattr(module, "model", module)
    cfg = getattr(module, "config", None)

    def get(key, default=None):
        if cfg is None:
            return default
        return cfg.get(key, default) if isinstance(cfg, Mapping) else getattr(cfg, key, default)

    if stage in (StageName.UNET, StageName.UNET_FEATURES, StageName.UNET_SHALLOW):
        widths = get("block_out_channels")
        return ModelDims(embed_dim=int(get("cross_attention_dim")), pose_channels=int(widths[0]),
                         cache_channels=int(widths[1]) if len(widths) > 1 else 0)
    if stage == StageName.POSE_NET:
        return ModelDims(embed_dim=1024, pose_channels=int(module.final_proj.out_channels))
    if stage in (StageName.VAE_ENCODER, StageName.VAE_DECODER):
        return ModelDims(embed_dim=1024, pose_channels=320, latent_channels=int(get("latent_channels", 4)))
    if stage == StageName.IMAGE_ENCODER:
        return ModelDims(embed_dim=int(get("projection_dim")), pose_channels=320, clip_image_size=int(get("image_size", 224)))
    return ModelDims(embed_dim=1024, pose_channels=320)
