"""Image and video quality measures for the quality bench and the toy model's tests.

Frames are uint8 RGB arrays (..., H, W, 3). Every score is computed per frame and summarised by
the caller (the median, unless said otherwise).
"""
from __future__ import annotations

import cv2
import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of (N, H, W, 3) uint8 frames (inf for identical frames)."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = (diff**2).reshape(diff.shape[0], -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(255.0**2 / mse)


def gaussian_filter(x: np.ndarray, sigma: float) -> np.ndarray:
    """11x11 Gaussian window (SSIM's), edges reflected."""
    return cv2.GaussianBlur(x, (11, 11), sigma, borderType=cv2.BORDER_REFLECT)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Per-frame SSIM (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03) of the luma."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for fa, fb in zip(luma(a), luma(b)):
        mu_a, mu_b = gaussian_filter(fa, sigma), gaussian_filter(fb, sigma)
        var_a = gaussian_filter(fa * fa, sigma) - mu_a**2
        var_b = gaussian_filter(fb * fb, sigma) - mu_b**2
        cov = gaussian_filter(fa * fb, sigma) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        out.append(float(s.mean()))
    return np.array(out)


def luma(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H, W) float64 BT.601 luma."""
    return frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def silhouette(frames: np.ndarray, backdrop: np.ndarray, threshold: float = 40.0) -> np.ndarray:
    """(N, H, W) bool: pixels farther than ``threshold`` (L2, RGB) from the known backdrop."""
    d = np.linalg.norm(frames.astype(np.float64) - backdrop.astype(np.float64), axis=-1)
    return d > threshold


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame intersection over union of (N, H, W) boolean masks (1 where both are empty)."""
    inter = (a & b).reshape(a.shape[0], -1).sum(1)
    union = (a | b).reshape(a.shape[0], -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def frame_changes(frames: np.ndarray) -> np.ndarray:
    """Mean absolute change between consecutive frames, (N - 1,), in 0..255 units."""
    f = frames.astype(np.float64)
    return np.abs(np.diff(f, axis=0)).reshape(len(f) - 1, -1).mean(1)


def seam_score(frames: np.ndarray, boundaries: list[int]) -> float:
    """Frame-to-frame change across window boundaries divided by the change elsewhere.

    ``boundaries``: output-frame indices b where frame b-1 -> b crosses from one window's
    exclusive part to the next (see :func:`window_boundaries`). 1.0: seams are invisible in
    motion terms; > 1: a jump at the boundaries. NaN when there is no boundary or no inner step.
    """
    changes = frame_changes(frames)
    at = sorted({b - 1 for b in boundaries if 1 <= b < len(frames)})
    inner = np.setdiff1d(np.arange(len(changes)), at)
    if not at or not len(inner):
        return float("nan")
    return float(changes[at].mean() / max(changes[inner].mean(), 1e-9))


def flicker_score(frames: np.ndarray, reference: np.ndarray | None = None) -> float:
    """Temporal flicker: mean absolute second difference of the frames (0..255 units), i.e. change
    that does not continue the motion. With ``reference`` (frames of the same video that count as
    flicker-free, e.g. the ground truth), the reference's own value is subtracted."""

    def second_diff(f: np.ndarray) -> float:
        f = f.astype(np.float64)
        if len(f) < 3:
            return 0.0
        return float(np.abs(f[2:] - 2 * f[1:-1] + f[:-2]).mean())

    value = second_diff(frames)
    return value - second_diff(reference) if reference is not None else value


def window_boundaries(windows: list[list[int]]) -> list[int]:
    """Output-frame indices (0 = first driving frame) where a new window takes over: the first
    frame past the middle of each overlap of consecutive windows (frame indices in ``windows``
    count the reference slot as 0, as ``model.windows.window_indices`` does)."""
    out = []
    for prev, nxt in zip(windows, windows[1:]):
        shared = sorted(set(prev[1:]) & set(nxt[1:]))
        split = shared[len(shared) // 2] if shared else nxt[1]
        out.append(split - 1)
    return out
