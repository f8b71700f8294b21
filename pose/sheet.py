"""Poses drawn for people (not for the PoseNet): the skeleton over the source frame, and the pose
contact sheet of ``mimic pose --preview``, a grid of evenly spaced frames a person can read at a glance.

The model's pose images (``mimic.pose.draw``) are drawn for the PoseNet: limbs 8 px wide on a
2160-px canvas, dimmed to 60 %. Shrunk to a 160-px tile that is a faint 1-px line on black. Here
each picture is drawn at its own size instead, with the same OpenPose colours at full brightness and
line widths scaled to the picture (anti-aliased edges).

Over a source frame (:func:`overlay_pose`) the frame is first dimmed to :data:`BACKDROP_PERCENT`
(``v · 60 // 100`` per channel, exact integers) so the saturated skeleton colours stand out on
any clothing, and the skeleton is drawn opaque on top, thinner than on black (:func:`overlay_width`)
so it does not hide the limb it follows. Every pixel is therefore either a skeleton colour
(inside a line or dot), the dimmed source (away from the skeleton) or, on the 1-px anti-aliased rim,
a blend of the two. Hands and face points are drawn where both scores reach 0.3, like the body, so
what is drawn is what DWPose is confident of (the PoseNet's image fades them out by score).

Each tile of the sheet is labelled under the picture with its 1-based frame number ("frame 1" is
the first sampled frame) and its time from the first sampled frame; a frame where the detector found
no person box (DWPose ran on the whole frame) has its label in orange.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from mimic.errors import InputError
from mimic.media.images import write_png

from .draw import ALL_PARTS, BODY_COLORS, BODY_LIMBS, HAND_EDGE_RGB, HAND_EDGES, DrawParts
from .postprocess import KEYPOINT_THRESHOLD, PoseFrame

TILE_WIDTH = 160
MAX_TILES = 32
LABEL_HEIGHT = 18  # px strip under each tile: "frame 12  0.50 s"
LABEL_SCALE = 0.4  # cv2 font scale of a tile label (smaller when a long label would not fit)
GAP = 2
BACKGROUND = 64  # grey between tiles
LABEL_STRIP = 24  # grey of the strip under a tile
LABEL_TEXT = (235, 235, 235)
NO_BOX_TEXT = (255, 160, 40)  # label of a frame without a detected person box
BACKDROP_PERCENT = 60  # the source frame under a skeleton, in percent of its brightness
FACE_COLOR = (255, 255, 255)


def limb_width(tile_width: int) -> int:
    """Body limb width in px on black: 1/40 of the tile, at least 2 (a 160-px tile gets 4)."""
    return max(2, round(tile_width / 40))


def overlay_width(height: int, width: int) -> int:
    """Body limb width in px over a source frame: 1/90 of the short side, at least 2 (640x360 gets 4)."""
    return max(2, round(min(height, width) / 90))


def backdrop(rgb: np.ndarray) -> np.ndarray:
    """The source frame under a skeleton: every channel ``v · BACKDROP_PERCENT // 100`` (uint8)."""
    return (rgb.astype(np.uint16) * BACKDROP_PERCENT // 100).astype(np.uint8)


def draw_preview_pose(pose: PoseFrame, height: int, width: int, background: np.ndarray | None = None,
                      parts: DrawParts = ALL_PARTS, thickness: int | None = None) -> np.ndarray:
    """(height, width, 3) uint8 RGB: ``pose`` drawn for people (not for the PoseNet), on black or on
    ``background`` ((height, width, 3) RGB, drawn as given: see :func:`overlay_pose`).

    ``parts`` leaves the body, hands or face out; ``thickness``: limb width (default
    :func:`limb_width`); joints are discs of that radius, hand lines half as wide, face dots a third.
    Colours are written as the model's images write them (BGR values into an RGB picture), so a
    limb has the colour it has in the pose images the PoseNet sees."""
    if background is None:
        canvas = np.zeros((height, width, 3), dtype=np.uint8)  # drawn as BGR, like the model's images
    else:
        if background.shape != (height, width, 3) or background.dtype != np.uint8:
            raise InputError(f"a pose background must be uint8 ({height}, {width}, 3), got {background.dtype} {background.shape}")
        canvas = np.ascontiguousarray(background[:, :, ::-1])
    thick = limb_width(width) if thickness is None else max(1, int(thickness))
    scale = np.array([float(width), float(height)])
    candidate, subset, score = pose.candidate, pose.subset, pose.body_score
    if parts.body:
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
    if parts.hands:
        hand_width = max(1, thick // 2)
        for peaks, scores in zip(pose.hands, pose.hands_score):
            pts = peaks * scale
            for (a, b), rgb in zip(HAND_EDGES, HAND_EDGE_RGB):
                if _confident(scores, a, b) and _visible(pts[a]) and _visible(pts[b]):
                    cv2.line(canvas, _pt(pts[a]), _pt(pts[b]), (rgb * 255).tolist(), hand_width, lineType=cv2.LINE_AA)
    if parts.face:
        for points, scores in zip(pose.faces, pose.faces_score):
            for p, s in zip(points * scale, scores):
                if s >= KEYPOINT_THRESHOLD and _visible(p):
                    cv2.circle(canvas, _pt(p), max(1, thick // 3), FACE_COLOR, -1)
    return canvas[:, :, ::-1].copy()  # BGR -> RGB, as the model's pose images


def overlay_pose(rgb: np.ndarray, pose: PoseFrame, parts: DrawParts = ALL_PARTS) -> np.ndarray:
    """(H, W, 3) uint8 RGB: ``pose`` drawn over the source frame ``rgb`` (already at the picture's
    size), which is dimmed to :data:`BACKDROP_PERCENT` first; lines :func:`overlay_width` wide."""
    height, width = rgb.shape[:2]
    return draw_preview_pose(pose, height, width, backdrop(rgb), parts, overlay_width(height, width))


def _confident(scores: np.ndarray, a: int, b: int) -> bool:
    return bool(scores[a] >= KEYPOINT_THRESHOLD and scores[b] >= KEYPOINT_THRESHOLD)


def _visible(p: np.ndarray) -> bool:
    return bool(np.isfinite(p).all() and p[0] > 0.01 and p[1] > 0.01)


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def frame_label(number: int, time_s: float | None) -> str:
    """``frame 12  0.50 s``: ``number`` is 1-based (frame 1 = the first sampled frame)."""
    return f"frame {number}" if time_s is None else f"frame {number}  {time_s:.2f} s"


def label_scale(text: str, width: int, scale: float = LABEL_SCALE) -> float:
    """The font scale at which ``text`` fits ``width`` px with a 4-px margin each side."""
    while scale > 0.25 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 8:
        scale = round(scale - 0.05, 2)
    return scale


def pick_frames(count: int, limit: int = MAX_TILES) -> np.ndarray:
    """Up to ``limit`` evenly spaced frame indices, first and last included."""
    return np.unique(np.linspace(0, count - 1, min(count, limit)).round().astype(int))


def tile_size(video_hw: tuple[int, int], tile_width: int = TILE_WIDTH) -> tuple[int, int]:
    """(height, width) of a contact-sheet tile: the video's aspect ratio, ``tile_width`` wide."""
    height, width = video_hw
    return max(1, round(height * tile_width / width)), tile_width


def contact_sheet(poses: Sequence[PoseFrame], video_hw: tuple[int, int], times_s: Sequence[float] | None = None,
                  columns: int = 8, tile_width: int = TILE_WIDTH, frames: Mapping[int, np.ndarray] | None = None,
                  parts: DrawParts = ALL_PARTS) -> np.ndarray:
    """(H, W, 3) uint8 RGB grid of up to 32 evenly spaced frames of ``poses`` (drawn at the video's
    aspect ratio), each labelled with its 1-based frame number and its time from the first sampled
    frame (``times_s``: the sampled frames' times).

    ``frames``: source frames by pose index (:func:`pick_frames`' indices; any size, resized to the
    tile): those tiles show the pose over the frame (:func:`overlay_pose`), the others on black."""
    if len(poses) == 0:
        raise InputError("no poses for a contact sheet")
    picks = pick_frames(len(poses))
    tile_h, _ = tile_size(video_hw, tile_width)
    cols = min(columns, len(picks))
    rows = -(-len(picks) // columns)
    cell_h = tile_h + LABEL_HEIGHT
    sheet = np.full((rows * (cell_h + GAP) + GAP, cols * (tile_width + GAP) + GAP, 3), BACKGROUND, dtype=np.uint8)
    frames = frames or {}
    for slot, index in enumerate(picks):
        row, col = divmod(slot, columns)
        y, x = GAP + row * (cell_h + GAP), GAP + col * (tile_width + GAP)
        pose = poses[index]
        source = frames.get(int(index))
        if source is None:
            sheet[y:y + tile_h, x:x + tile_width] = draw_preview_pose(pose, tile_h, tile_width, parts=parts)
        else:
            sheet[y:y + tile_h, x:x + tile_width] = overlay_pose(fit(source, (tile_h, tile_width)), pose, parts)
        sheet[y + tile_h:y + cell_h, x:x + tile_width] = LABEL_STRIP
        t = times_s[index] - times_s[0] if times_s is not None else None
        text = frame_label(int(index) + 1, t)
        colour = LABEL_TEXT if pose.person_detected else NO_BOX_TEXT
        cv2.putText(sheet, text, (x + 4, y + tile_h + LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX,
                    label_scale(text, tile_width), colour, 1, lineType=cv2.LINE_AA)
    return sheet


def fit(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """``rgb`` resized to (height, width): area filter when shrinking, bilinear when enlarging."""
    height, width = size_hw
    if rgb.shape[:2] == (height, width):
        return rgb
    shrink = height <= rgb.shape[0] and width <= rgb.shape[1]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def write_contact_sheet(poses: Sequence[PoseFrame], video_hw: tuple[int, int], out_png: str | Path,
                        times_s: Sequence[float] | None = None, columns: int = 8,
                        frames: Mapping[int, np.ndarray] | None = None, parts: DrawParts = ALL_PARTS) -> Path:
    return write_png(Path(out_png), contact_sheet(poses, video_hw, times_s, columns, frames=frames, parts=parts))
