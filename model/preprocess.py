"""Reference-image preparation and CLIP input preprocessing (spec 3.1-3.3).

Tensor resizes follow torchvision 0.15 on uint8 tensors exactly (float32 bilinear, no antialias,
align_corners=False, rounded back to uint8), since that is what the released ``inference.py`` ran.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

ASPECT_RATIO = 9 / 16  # width / height of the portrait output


def target_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(H, W) of the output: the short side is ``resolution``, the long side floor(res*16/9/64)*64.
    Portrait when the input is taller than wide; landscape (and square) otherwise."""
    long_side = int(resolution / ASPECT_RATIO // 64) * 64
    return (long_side, resolution) if height > width else (resolution, long_side)


def cover_resize_size(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int]:
    """Size that covers (target_h, target_w) keeping the aspect ratio (ceil on the free side)."""
    ratio = float(height) / float(width)
    if ratio < target_h / target_w:
        return target_h, math.ceil(target_h / ratio)
    return math.ceil(target_w * ratio), target_w


def resize_uint8(image_chw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision 0.15 tensor resize: float32 bilinear, no antialias, round, back to uint8."""
    x = image_chw.unsqueeze(0).to(torch.float32)
    x = F.interpolate(x, size=list(size), mode="bilinear", align_corners=False, antialias=False)
    return x.round().clamp(0, 255).to(torch.uint8).squeeze(0)


def center_crop(image_chw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision center_crop for an image at least as large as ``size``."""
    h, w = image_chw.shape[-2:]
    top = int(round((h - size[0]) / 2.0))
    left = int(round((w - size[1]) / 2.0))
    return image_chw[..., top : top + size[0], left : left + size[1]]


def prepare_reference(image_rgb: np.ndarray, resolution: int) -> np.ndarray:
    """Cover-resize + centre-crop an RGB uint8 (h, w, 3) image to the output size; returns (H, W, 3)."""
    chw = torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1)
    h, w = chw.shape[-2:]
    th, tw = target_size(h, w, resolution)
    chw = center_crop(resize_uint8(chw, cover_resize_size(h, w, th, tw)), (th, tw))
    return chw.permute(1, 2, 0).contiguous().numpy()


def upstream_pixel_roundtrip(image_rgb: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """The released script scales the crop to [-1, 1] in the default dtype (fp16 unless
    ``--no_use_float16``) and converts back with ``((x + 1) * 127.5).to(uint8)`` (truncation), which
    is lossy in fp16. The reference reproduces it so its input image is bit-identical."""
    x = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(dtype) / 127.5 - 1
    return ((x + 1.0) * 127.5).to(torch.uint8).numpy()


def _gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    sig = torch.tensor(sigma, dtype=torch.float32)
    x = torch.arange(size, dtype=torch.float32) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    k = torch.exp(-x.pow(2.0) / (2 * sig.pow(2.0)))
    return k / k.sum()


def resize_with_antialiasing(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """SVD's CLIP resize of a (N, C, H, W) tensor in [-1, 1]: separable Gaussian blur with
    sigma = max((H/224 - 1)/2, 0.001) per axis, kernel int(max(4 sigma, 3)) made odd, reflect
    padding, then bicubic interpolation with align_corners=True. Squashes, never crops."""
    h, w = x.shape[-2:]
    sigmas = (max((h / size[0] - 1.0) / 2.0, 0.001), max((w / size[1] - 1.0) / 2.0, 0.001))
    ks = [int(max(4.0 * s, 3)) for s in sigmas]
    ks = [k + 1 if k % 2 == 0 else k for k in ks]
    ky = _gaussian_kernel1d(ks[0], sigmas[0]).to(x)
    kx = _gaussian_kernel1d(ks[1], sigmas[1]).to(x)
    c = x.shape[1]
    # x first, then y, each with its own reflect padding (the order SVD's blur uses).
    x = F.pad(x, (ks[1] // 2, ks[1] // 2, 0, 0), mode="reflect")
    x = F.conv2d(x, kx.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, ks[0] // 2, ks[0] // 2), mode="reflect")
    x = F.conv2d(x, ky.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=True)


def clip_pixels(image_rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> normalised float32 (1, 3, 224, 224), the image encoder's input."""
    x = torch.from_numpy(image_rgb.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    x = resize_with_antialiasing(x * 2.0 - 1.0, (224, 224))
    x = (x + 1.0) / 2.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def vae_pixels(image_rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 (1, 3, H, W) in [-1, 1], the VAE encoder's input."""
    x = torch.from_numpy(image_rgb.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    return x * 2.0 - 1.0


def pose_pixels(poses_uint8: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Drawn pose images uint8 (F, 3, H, W) -> [-1, 1] in ``dtype`` (PoseNet's input), always
    contiguous: on the CPU a convolution's last bits depend on its input's memory layout, and pose
    images read from a video arrive channels-last strided, so without this the same poses would
    render differently by where they came from."""
    t = torch.as_tensor(poses_uint8).contiguous()
    return t.to(dtype) / 127.5 - 1
