"""The pose contact sheet of ``mimic pose --preview``: a grid of evenly spaced frames a person can
read at a glance.

The model's pose images (``mimic.pose.draw``) are drawn for the PoseNet: limbs 8 px wide on a
2160-px canvas, dimmed to 60 %. Shrunk to a 160-px tile that is a faint 1-px line on black. Here
each tile is drawn at its own size instead, with the same OpenPose colours at full brightness and
line widths scaled to the tile, and labelled under the picture with the frame number and its time
in the driving video.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mimic.errors import InputError
from mimic.media.images import write_png

from .draw import BODY_COLORS, BODY_LIMBS, HAND_EDGE_RGB, HAND_EDGES
from .postprocess import KEYPOINT_THRESHOLD, PoseFrame

TILE_WIDTH = 160
MAX_TILES = 32
LABEL_HEIGHT = 18  # px strip under each tile: "#12  0.50 s"
GAP = 2
BACKGROUND = 64  # grey between tiles
LABEL_TEXT = (235, 235, 235)


def limb_width(tile_width: int) -> int:
    """Body limb width in px: 1/40 of the tile, at least 2 (a 160-px tile gets 4)."""
    return max(2, round(tile_width / 40))


def draw_preview_pose(pose: PoseFrame, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 RGB: ``pose`` drawn for people (not for the PoseNet)."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)  # drawn as BGR, like the model's images
    thick = limb_width(width)
    scale = np.array([float(width), float(height)])
    candidate, subset, score = pose.candidate, pose.subset, pose.body_score
    for (a, b), colour in zip(BODY_LIMBS, BODY_COLORS):
        for person in range(subset.shape[0]):
            ia, ib = int(subset[person, a]), int(subset[person, b])
            if ia < 0 or ib < 0 or score[person, a] < KEYPOINT_THRESHOLD or score[person, b] < KEYPOINT_THRESHOLD:
                continue
            pa, pb = candidate[ia] * scale, candidate[ib] * scale
            if np.isfinite(pa).all() and np.isfinite(pb).all():
                cv2.line(canvas, _pt(pa), _pt(pb), colour, thick, lineType=cv2.LINE_AA)
    for person in range(subset.shape[0]):
        for joint in range(subset.shape[1]):
            index = int(subset[person, joint])
            if index >= 0 and np.isfinite(candidate[index]).all():
                cv2.circle(canvas, _pt(candidate[index] * scale), thick, BODY_COLORS[joint], -1, lineType=cv2.LINE_AA)
    hand_width = max(1, thick // 2)
    for peaks in pose.hands:
        pts = peaks * scale
        for (a, b), rgb in zip(HAND_EDGES, HAND_EDGE_RGB):
            if _visible(pts[a]) and _visible(pts[b]):
                cv2.line(canvas, _pt(pts[a]), _pt(pts[b]), (rgb * 255).tolist(), hand_width, lineType=cv2.LINE_AA)
    for points in pose.faces:
        for p in points * scale:
            if _visible(p):
                cv2.circle(canvas, _pt(p), max(1, thick // 3), (255, 255, 255), -1)
    return canvas[:, :, ::-1].copy()  # BGR -> RGB, as the model's pose images


def _visible(p: np.ndarray) -> bool:
    return bool(np.isfinite(p).all() and p[0] > 0.01 and p[1] > 0.01)


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def frame_label(index: int, time_s: float | None) -> str:
    return f"#{index}" if time_s is None else f"#{index}  {time_s:.2f} s"


def pick_frames(count: int, limit: int = MAX_TILES) -> np.ndarray:
    """Up to ``limit`` evenly spaced frame indices, first and last included."""
    return np.unique(np.linspace(0, count - 1, min(count, limit)).round().astype(int))


def contact_sheet(poses: Sequence[PoseFrame], video_hw: tuple[int, int], times_s: Sequence[float] | None = None,
                  columns: int = 8, tile_width: int = TILE_WIDTH) -> np.ndarray:
    """(H, W, 3) uint8 RGB grid of up to 32 evenly spaced frames of ``poses`` (drawn at the video's
    aspect ratio), each labelled with its frame number and time."""
    if len(poses) == 0:
        raise InputError("no poses for a contact sheet")
    picks = pick_frames(len(poses))
    height, width = video_hw
    tile_h = max(1, round(height * tile_width / width))
    cols = min(columns, len(picks))
    rows = -(-len(picks) // columns)
    cell_h = tile_h + LABEL_HEIGHT
    sheet = np.full((rows * (cell_h + GAP) + GAP, cols * (tile_width + GAP) + GAP, 3), BACKGROUND, dtype=np.uint8)
    for slot, index in enumerate(picks):
        row, col = divmod(slot, columns)
        y, x = GAP + row * (cell_h + GAP), GAP + col * (tile_width + GAP)
        sheet[y:y + tile_h, x:x + tile_width] = draw_preview_pose(poses[index], tile_h, tile_width)
        sheet[y + tile_h:y + cell_h, x:x + tile_width] = 24
        t = times_s[index] if times_s is not None else None
        cv2.putText(sheet, frame_label(int(index), t), (x + 4, y + tile_h + LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    LABEL_TEXT, 1, lineType=cv2.LINE_AA)
    return sheet


def write_contact_sheet(poses: Sequence[PoseFrame], video_hw: tuple[int, int], out_png: str | Path,
                        times_s: Sequence[float] | None = None, columns: int = 8) -> Path:
    return write_png(Path(out_png), contact_sheet(poses, video_hw, times_s, columns))
