"""Windows ("tiles"), tent fusion weights and periodic initial noise (spec 3.6, 3.8, 3.9)."""
from __future__ import annotations

import numpy as np
import torch

from mimic.errors import InputError


def window_indices(num_frames: int, window: int, overlap: int) -> list[list[int]]:
    """Index lists of the released pipeline: every window is [0] + window-1 consecutive frames.

    Regular windows start at 0, s, 2s, ... (s = window - overlap) while start <= F - T; a tail
    window [0, F-T+1, ..., F-1] is appended when the last regular one ends before F-1. So
    consecutive windows share overlap-1 real frames plus the reference slot 0.
    """
    if window < 2:
        raise InputError(f"window must be at least 2 frames, got {window}")
    if not 0 <= overlap < window:
        raise InputError(f"overlap must be in [0, window), got overlap={overlap} window={window}")
    if num_frames < window:
        raise InputError(
            f"{num_frames} frames (reference slot + {num_frames - 1} driving frames) is shorter than the "
            f"window of {window}: the released pipeline needs at least {window - 1} driving frames"
        )
    stride = window - overlap
    windows = [[0] + list(range(start + 1, start + window)) for start in range(0, num_frames - window + 1, stride)]
    if windows[-1][-1] < num_frames - 1:
        windows.append([0] + list(range(num_frames - window + 1, num_frames)))
    return windows


def tent_weights(window: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """w_k = min((2k+1)/T, 2 - (2k+1)/T), k = 0..T-1."""
    k = torch.arange(window, dtype=torch.float64)
    w = torch.minimum((2 * k + 1) / window, 2 - (2 * k + 1) / window)
    return w.to(dtype=dtype, device=device)


def tile_noise(noise: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Repeat (B, T, ...) noise along time to (B, F, ...): frame f gets noise[f mod T]."""
    period = noise.shape[1]
    reps = num_frames // period + 1
    return noise.repeat(1, reps, *([1] * (noise.dim() - 2)))[:, :num_frames]


def guidance_scales(num_frames: int, min_scale: float, max_scale: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Frame-wise guidance linspace(min, max, F) shaped (1, F, 1, 1, 1)."""
    g = torch.linspace(min_scale, max_scale, num_frames)
    return g.to(dtype=dtype, device=device).view(1, num_frames, 1, 1, 1)


def check_shapes(reference: np.ndarray, num_frames: int, pose_hw: tuple[int, int], window: int) -> tuple[int, int, int]:
    """The shapes the released pipeline needs; returns (F, H, W)."""
    if reference.ndim != 3 or reference.shape[2] != 3 or reference.dtype != np.uint8:
        raise InputError(f"reference must be uint8 (H, W, 3), got {reference.dtype} {reference.shape}")
    h, w = reference.shape[:2]
    if tuple(pose_hw) != (h, w):
        raise InputError(f"pose images are {pose_hw[0]}x{pose_hw[1]} but the reference is {h}x{w}")
    if h % 64 or w % 64:
        raise InputError(f"height and width must be multiples of 64 (the UNet's skips), got {h}x{w}")
    window_indices(num_frames, window, 0)  # raises the clear F < T error
    return num_frames, h, w


def check_inputs(reference: np.ndarray, poses: np.ndarray, window: int) -> tuple[int, int, int]:
    if poses.ndim != 4 or poses.shape[1] != 3 or poses.dtype != np.uint8:
        raise InputError(f"poses must be uint8 (F, 3, H, W), got {poses.dtype} {poses.shape}")
    return check_shapes(reference, poses.shape[0], poses.shape[2:], window)
