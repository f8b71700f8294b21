"""Pose images served per window, so host memory does not grow with the video's length.

The denoiser asks for the pose images of one window at a time (once per window: PoseNet's output
is cached). :class:`DrawnPoses` keeps only keypoints and draws on demand; :class:`ArrayPoses` holds
already-drawn images; :class:`PaddedPoses` repeats the last pose to fill a window for short clips.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from .draw import ALL_PARTS, DrawParts, PoseDrawer
from .postprocess import PoseFrame


class PoseImages(Protocol):
    height: int
    width: int

    def __len__(self) -> int: ...

    def get(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 RGB (len(indices), 3, H, W)."""
        ...


class ArrayPoses:
    def __init__(self, images: np.ndarray):
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"pose images must be uint8 (F, 3, H, W), got {images.dtype} {images.shape}")
        self.images = images
        self.height, self.width = images.shape[2:]

    def __len__(self) -> int:
        return self.images.shape[0]

    def get(self, indices: Sequence[int]) -> np.ndarray:
        return self.images[list(indices)]


class DrawnPoses:
    """Frame 0 = ``first`` (an already-drawn image, e.g. the reference pose), then ``poses`` drawn
    with the exact confidence-aware drawing at (H, W) when asked for; ``parts``: which parts
    (body, hands, face) are drawn, all by default (``first`` is drawn by the caller)."""

    def __init__(self, first: np.ndarray, poses: Sequence[PoseFrame], height: int, width: int,
                 parts: DrawParts = ALL_PARTS):
        self.first, self.poses = first, list(poses)
        self.height, self.width = height, width
        self._drawer = PoseDrawer(height, width, parts)

    def __len__(self) -> int:
        return 1 + len(self.poses)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        out = np.empty((len(indices), 3, self.height, self.width), dtype=np.uint8)
        for k, i in enumerate(indices):
            out[k] = self.first if i == 0 else self._drawer(self.poses[i - 1])
        return out


class PaddedPoses:
    """``inner`` extended to ``length`` frames by repeating its last frame."""

    def __init__(self, inner: PoseImages, length: int):
        self.inner, self.length = inner, max(length, len(inner))
        self.height, self.width = inner.height, inner.width

    def __len__(self) -> int:
        return self.length

    def get(self, indices: Sequence[int]) -> np.ndarray:
        last = len(self.inner) - 1
        return self.inner.get([min(i, last) for i in indices])


def as_pose_images(poses) -> PoseImages:
    return ArrayPoses(poses) if isinstance(poses, np.ndarray) else poses
