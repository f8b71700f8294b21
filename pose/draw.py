"""The "confidence-aware" pose rendering the PoseNet was trained on (spec §4.5), pixel-exact.

* Canvas: black uint8 of ``(int(H·sr), int(W·sr))`` with ``sr = 2160 / min(H, W)`` (1 when the
  short side is already 2160); 1024×576 → 3840×2160. Everything is drawn there, then
  ``cv2.resize`` (INTER_LINEAR) to (W, H), then BGR→RGB, then HWC→CHW.
* Order: body limbs → whole canvas ×0.6 (uint8 truncation) → body joints → hands → faces.
* Limbs (first 17 OpenPose pairs, limb-major then person): skipped if an endpoint score < 0.3;
  filled ``cv2.ellipse2Poly`` (centre = int midpoint, half-axes (int(length/2), 4), int angle in
  degrees, 1° steps), colour ``int(c·s_a·s_b)`` per channel.
* Joints: where the score > 0.3 (``subset`` ≠ −1), filled circle r=4, colour ``int(c·s)``.
* Hands (no threshold), per hand: 20 edges, thickness 2, colour HSV(e/20, 1, 1)·int(s_a·s_b·255)
  (OpenCV rounds the float channels), then 21 dots r=4 colour (0, 0, int(s·255)); an edge/dot
  is drawn only if every pixel coordinate int(x·W), int(y·H) is > 0.01.
* Faces (no threshold): 68 dots r=3, grey int(s·255), same > 0.01 rule.
* The colours are written as given into an OpenCV (BGR) canvas and the result is swapped to RGB,
  so limb 0 ([255, 0, 0]) shows blue and hand dots red in the output.

:class:`PoseDrawer` is the fast implementation. It reuses one canvas; it never runs the
full-canvas ×0.6 pass (≈95 ms at 3840×2160) but draws each limb with its dimmed colour
``int(int(c·s_a·s_b)·0.6)``, which is identical because limbs overwrite (no blending) on a zero
canvas; and it computes pixel coordinates and colours vectorised with the same float64
operations as the scalar code (lengths and angles stay scalar Python floats, which use the same
``pow``/``atan2`` as NumPy scalars). Every primitive is still drawn, black ones included: a black
primitive overwrites earlier content, so skipping it would change pixels.

:class:`DrawParts` switches whole parts off (body = limbs and joints, hands, face), as ComfyUI's
pose nodes allow; an excluded part draws nothing and the others are drawn exactly as with all
parts on (the ×0.6 dimming only ever touches limbs, so dropping the body changes no hand or face
pixel). The default, all parts on, is the released drawing.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .postprocess import KEYPOINT_THRESHOLD, PoseFrame

CANVAS_SHORT_SIDE = 2160
LIMB_HALF_WIDTH = 4
JOINT_RADIUS = 4
HAND_LINE_THICKNESS = 2
HAND_DOT_RADIUS = 4
FACE_DOT_RADIUS = 3
LIMB_DIM = 0.6
PIXEL_EPS = 0.01
# Only the first 17 of the 19 OpenPose pairs are drawn; 0-based indices into the 18 body points.
BODY_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
              (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
BODY_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
               (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
               (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
              (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19),
              (19, 20))
# HSV(e/20, 1, 1) → RGB, the same float64 formula as matplotlib's hsv_to_rgb.
HAND_EDGE_RGB = np.array([colorsys.hsv_to_rgb(e / float(len(HAND_EDGES)), 1.0, 1.0)
                          for e in range(len(HAND_EDGES))])
# Pixel coordinates and colour levels are clamped to ±2**30 before they reach OpenCV (int32); the
# released code raises for such values, inside the range nothing changes. Likewise non-finite
# keypoints are not drawn and NaN scores count as 0 where the released code raises.
_COORD_LIMIT = float(1 << 30)
_DIM_LUT = (np.arange(256) * LIMB_DIM).astype(np.uint8).astype(np.int64)
_BODY_COLORS_F = np.array(BODY_COLORS, dtype=np.float64)
_LIMB_A = np.array([a for a, _ in BODY_LIMBS])
_LIMB_B = np.array([b for _, b in BODY_LIMBS])
_HAND_EDGE_A = np.array([a for a, _ in HAND_EDGES])
_HAND_EDGE_B = np.array([b for _, b in HAND_EDGES])


@dataclass(frozen=True)
class DrawParts:
    """Which parts of a pose are drawn: ``body`` (limbs and joints), ``hands``, ``face``. All on by
    default (the released drawing); e.g. ``DrawParts(face=False)`` leaves the face dots out."""

    body: bool = True
    hands: bool = True
    face: bool = True

    def __post_init__(self) -> None:
        for name in ("body", "hands", "face"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"DrawParts.{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def from_settings(cls, settings: object) -> "DrawParts":
        """The parts named by a settings object's ``draw_body``, ``draw_hands``, ``draw_face``
        attributes (a generation config); a missing attribute means drawn."""
        return cls(*(getattr(settings, f"draw_{name}", True) for name in ("body", "hands", "face")))


ALL_PARTS = DrawParts()


def canvas_size(height: int, width: int) -> tuple[int, int]:
    """Drawing canvas (height, width): short side scaled to 2160."""
    short = min(height, width)
    ratio = (CANVAS_SHORT_SIDE / short) if short != CANVAS_SHORT_SIDE else 1
    return int(height * ratio), int(width * ratio)


def draw_pose(pose: PoseFrame, height: int, width: int, parts: DrawParts = ALL_PARTS) -> np.ndarray:
    """Render ``pose`` as a (3, height, width) uint8 RGB pose image (spec §4.5); ``parts``: which
    parts are drawn (all by default)."""
    return PoseDrawer(height, width, parts)(pose)


class PoseDrawer:
    """Renders pose images of one output size, reusing its 2160-short-side canvas between calls.
    ``parts`` (:class:`DrawParts`) leaves the body, the hands or the face out; all drawn by default."""

    def __init__(self, height: int, width: int, parts: DrawParts = ALL_PARTS) -> None:
        if not isinstance(parts, DrawParts):
            raise TypeError(f"parts must be a DrawParts, got {type(parts).__name__}")
        self.height, self.width = int(height), int(width)
        self.parts = parts
        self._canvas = np.zeros((*canvas_size(self.height, self.width), 3), dtype=np.uint8)

    def __call__(self, pose: PoseFrame) -> np.ndarray:
        canvas, parts = self._canvas, self.parts
        canvas.fill(0)
        if parts.body:
            self._draw_limbs(canvas, pose)
            self._draw_joints(canvas, pose)
        if parts.hands:
            for peaks, scores in zip(pose.hands, pose.hands_score):
                self._draw_hand(canvas, peaks, scores)
        if parts.face:
            for points, scores in zip(pose.faces, pose.faces_score):
                self._draw_face(canvas, points, scores)
        small = cv2.resize(canvas, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return np.stack(cv2.split(small)[::-1])  # BGR→RGB and HWC→CHW in one copy

    @staticmethod
    def _draw_limbs(canvas: np.ndarray, pose: PoseFrame) -> None:
        """Limbs, already dimmed: each is drawn with ``int(colour·0.6)``.

        Equivalent to drawing at full colour and dimming the canvas: polygons overwrite without
        blending on a zero canvas, so every pixel ends as LUT[colour of its last polygon], and
        untouched pixels stay int(0·0.6) = 0.
        """
        height, width = canvas.shape[:2]
        candidate, subset, score = pose.candidate, pose.subset, pose.body_score
        s_a, s_b = score[:, _LIMB_A].T, score[:, _LIMB_B].T              # (17, P)
        scale = np.array([float(width), float(height)])
        ends_a = candidate[subset[:, _LIMB_A].T.astype(np.int64)] * scale  # (17, P, 2)
        ends_b = candidate[subset[:, _LIMB_B].T.astype(np.int64)] * scale
        drawn = ((s_a >= KEYPOINT_THRESHOLD) & (s_b >= KEYPOINT_THRESHOLD)
                 & np.isfinite(ends_a).all(axis=-1) & np.isfinite(ends_b).all(axis=-1))
        levels = np.trunc(_BODY_COLORS_F[:len(BODY_LIMBS), None, :] * s_a[..., None] * s_b[..., None])
        colors = _DIM_LUT[np.clip(levels, 0, 255).astype(np.int64)]
        for limb, person in zip(*np.nonzero(drawn)):
            xa, ya = ends_a[limb, person].tolist()
            xb, yb = ends_b[limb, person].tolist()
            length = ((ya - yb) ** 2 + (xa - xb) ** 2) ** 0.5
            angle = math.degrees(math.atan2(ya - yb, xa - xb))
            polygon = cv2.ellipse2Poly((_int((xa + xb) / 2), _int((ya + yb) / 2)),
                                       (_int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, colors[limb, person].tolist())

    @staticmethod
    def _draw_joints(canvas: np.ndarray, pose: PoseFrame) -> None:
        """Joints with score > 0.3, joint-major then person, colour int(c·s)."""
        height, width = canvas.shape[:2]
        candidate, subset, score = pose.candidate, pose.subset, pose.body_score
        points = candidate[np.maximum(subset, 0).astype(np.int64)] * np.array([float(width), float(height)])
        levels = np.trunc(_BODY_COLORS_F[None, :, :] * score[..., None])  # (P, 18, 3)
        drawn = (subset != -1) & np.isfinite(points).all(axis=-1)
        for joint, person in zip(*np.nonzero(drawn.T)):
            x, y = points[person, joint].tolist()
            color = [_int(v) for v in levels[person, joint].tolist()]
            cv2.circle(canvas, (_int(x), _int(y)), JOINT_RADIUS, color, thickness=-1)

    @staticmethod
    def _draw_hand(canvas: np.ndarray, peaks: np.ndarray, scores: np.ndarray) -> None:
        height, width = canvas.shape[:2]
        xs, ys = _pixel_coords(peaks, width, height)
        visible = (xs > PIXEL_EPS) & (ys > PIXEL_EPS)
        edge_visible = visible[_HAND_EDGE_A] & visible[_HAND_EDGE_B]
        edge_level = np.trunc(np.nan_to_num(scores[_HAND_EDGE_A] * scores[_HAND_EDGE_B] * 255))
        edge_colors = HAND_EDGE_RGB * edge_level[:, None]
        for edge in np.flatnonzero(edge_visible):
            a, b = _HAND_EDGE_A[edge], _HAND_EDGE_B[edge]
            cv2.line(canvas, (int(xs[a]), int(ys[a])), (int(xs[b]), int(ys[b])),
                     edge_colors[edge].tolist(), thickness=HAND_LINE_THICKNESS)
        dot_level = np.trunc(np.nan_to_num(scores * 255))
        for point in np.flatnonzero(visible):
            cv2.circle(canvas, (int(xs[point]), int(ys[point])), HAND_DOT_RADIUS,
                       (0, 0, _int(dot_level[point])), thickness=-1)

    @staticmethod
    def _draw_face(canvas: np.ndarray, points: np.ndarray, scores: np.ndarray) -> None:
        height, width = canvas.shape[:2]
        xs, ys = _pixel_coords(points, width, height)
        level = np.trunc(np.nan_to_num(scores * 255))
        for point in np.flatnonzero((xs > PIXEL_EPS) & (ys > PIXEL_EPS)):
            grey = _int(level[point])
            cv2.circle(canvas, (int(xs[point]), int(ys[point])), FACE_DOT_RADIUS, (grey, grey, grey),
                       thickness=-1)


def _int(value: float) -> int:
    """``int(value)`` (truncation toward zero) clamped to ±2**30, for OpenCV's int32 arguments."""
    return int(min(max(value, -_COORD_LIMIT), _COORD_LIMIT))


def _pixel_coords(points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``int(x·W)``, ``int(y·H)`` (truncation toward zero, clamped, NaN → −1 = hidden)."""
    scaled = np.nan_to_num(points * np.array([float(width), float(height)]), nan=-1.0)
    pixels = np.trunc(np.clip(scaled, -_COORD_LIMIT, _COORD_LIMIT)).astype(np.int64)
    return pixels[:, 0], pixels[:, 1]

