"""Labelled side-by-side previews: the pose image and the rendered frame next to each other, each
half named above it ("pose" | "output") and the frame number and time under both, so a person
sees at once which side is which and where in the video the frame is. Frame numbers shown to the
user count from 1 (the convention everywhere: "frame 1" is the first output frame, at 0.00 s);
the functions here take the 0-based index into the video, as Python code does.

``labelled_side_by_side`` makes one picture (``mimic demo``'s preview.png), ``labelled_panels`` the same
for any number of panels (pose | output | ground truth); ``write_side_by_side_video`` a short
labelled video of the side-by-side layout.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mimic.errors import InputError

HEADER = 22  # px: the strip above the halves holding their names
FOOTER = 22  # px: the strip below holding "frame N   t = T s" (N from 1)
STRIP_GREY = 32
TEXT = (235, 235, 235)
DIVIDER = (96, 96, 96)


def text_scale(width: int) -> float:
    """cv2 font scale for a strip ``width`` px wide: readable on a 128-px half, not huge on 1024."""
    return float(min(0.6, max(0.35, width / 480)))


def label_strip(text: str, width: int, height: int, scale: float) -> np.ndarray:
    """(height, width, 3) uint8: ``text`` in light grey, left-aligned and vertically centred, on the
    dark strip colour (the exact pixels the preview draws; tests compare against them)."""
    import cv2

    strip = np.full((height, width, 3), STRIP_GREY, dtype=np.uint8)
    (_, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(strip, text, (6, (height + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT, 1, lineType=cv2.LINE_AA)
    return strip


def frame_caption(frame_index: int, fps: float) -> str:
    """``frame 1   t = 0.00 s`` for index 0: the number counts from 1, the time from 0."""
    number = frame_index + 1
    return f"frame {number}   t = {frame_index / fps:.2f} s" if fps and fps > 0 else f"frame {number}"


def labelled_panels(panels_chw, labels, frame_index: int, fps: float) -> np.ndarray:
    """(3, H, W) uint8 images of one frame (pose, output, ground truth, ...) -> one (HEADER + H +
    FOOTER, n·W + 2(n-1), 3) uint8 RGB picture: the panels side by side (2-px dividers), each named
    above by its label, ``frame N   t = T s`` below (``frame_index``: 0-based index into the video;
    ``N = frame_index + 1``, ``T = frame_index / fps``). Rows of several frames stack with
    ``np.concatenate(rows, axis=0)``."""
    panels = [np.asarray(p) for p in panels_chw]
    labels = list(labels)
    shape = panels[0].shape if panels else None
    if not panels or len(labels) != len(panels) or any(p.ndim != 3 or p.shape != shape or p.shape[0] != 3 or p.dtype != np.uint8 for p in panels):
        raise InputError(f"a labelled preview needs uint8 (3, H, W) images of one size and a label each, got "
                         f"{[(p.shape, str(p.dtype)) for p in panels]} and {len(labels)} label(s)")
    _, height, width = shape
    scale = text_scale(width)
    total = len(panels) * width + 2 * (len(panels) - 1)
    out = np.empty((HEADER + height + FOOTER, total, 3), dtype=np.uint8)
    out[:] = DIVIDER
    for k, (panel, label) in enumerate(zip(panels, labels)):
        x = k * (width + 2)
        out[:HEADER, x:x + width] = label_strip(label, width, HEADER, scale)
        out[HEADER:HEADER + height, x:x + width] = panel.transpose(1, 2, 0)
    out[HEADER + height:] = label_strip(frame_caption(frame_index, fps), total, FOOTER, scale)
    return out


def labelled_side_by_side(pose_chw: np.ndarray, frame_chw: np.ndarray, frame_index: int, fps: float,
                          labels: tuple[str, str] = ("pose", "output")) -> np.ndarray:
    """The pose image and the output frame ((3, H, W) uint8 each) -> (HEADER + H + FOOTER, 2W + 2, 3)
    uint8 RGB: pose left, output right, named above, frame and time below (``labelled_panels``)."""
    return labelled_panels([pose_chw, frame_chw], labels, frame_index, fps)


def write_side_by_side_video(path: str | Path, poses: Iterable[np.ndarray], frames: Iterable[np.ndarray], fps: float,
                             labels: tuple[str, str] = ("pose", "output"), max_frames: int | None = None) -> Path:
    """A short H.264 video of labelled side-by-side frames (``poses`` and ``frames``: (3, H, W)
    uint8 each, in step), at ``fps``; ``max_frames`` caps its length. The height is padded to even."""
    from mimic.media.video_writer import write_rgb_video

    def pictures():
        for k, (pose, frame) in enumerate(zip(poses, frames)):
            if max_frames is not None and k >= max_frames:
                return
            picture = labelled_side_by_side(pose, frame, k, fps, labels)
            if picture.shape[0] % 2:  # yuv420p needs even sizes (the width is 2W + 2: even)
                picture = np.concatenate([picture, picture[-1:]], axis=0)
            yield picture

    return write_rgb_video(path, pictures(), fps)
