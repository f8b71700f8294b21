"""The demo's built-in inputs: a reference image and a dancing skeleton, so the engine runs with no
files at all (``mimic demo``, benchmarks; tests reuse them as deterministic inputs)."""
from __future__ import annotations

import math

import cv2
import numpy as np

from mimic.pose.postprocess import NUM_KEYPOINTS, PoseFrame

# A standing figure in OpenPose-18 order, normalised (x, y) for a portrait frame.
_REST_BODY = np.array(
    [
        (0.50, 0.16), (0.50, 0.25), (0.40, 0.25), (0.36, 0.38), (0.34, 0.50), (0.60, 0.25), (0.64, 0.38),
        (0.66, 0.50), (0.44, 0.52), (0.44, 0.68), (0.44, 0.85), (0.56, 0.52), (0.56, 0.68), (0.56, 0.85),
        (0.48, 0.14), (0.52, 0.14), (0.46, 0.15), (0.54, 0.15),
    ]
)


def synthetic_pose(t: float, image_hw: tuple[int, int]) -> PoseFrame:
    """The skeleton at phase ``t`` (radians): arms wave, knees bend, the body sways."""
    body = _REST_BODY.copy()
    sway = 0.03 * math.sin(t)
    body[:, 0] += sway
    for wrist, elbow, shoulder, sign in ((4, 3, 2, -1), (7, 6, 5, 1)):
        angle = 0.9 * math.sin(t + (0 if sign < 0 else math.pi / 2))
        sx, sy = body[shoulder]
        body[elbow] = (sx + sign * 0.10 * math.cos(angle), sy - 0.10 * math.sin(angle) + 0.02)
        body[wrist] = (body[elbow][0] + sign * 0.09 * math.cos(2 * angle), body[elbow][1] - 0.09 * math.sin(2 * angle))
    for knee in (9, 12):
        body[knee, 0] += 0.02 * math.sin(2 * t)
    keypoints = np.zeros((1, NUM_KEYPOINTS, 2))
    scores = np.zeros((1, NUM_KEYPOINTS))
    keypoints[0, :18] = body
    scores[0, :18] = 0.9
    # face: 68 points on an ellipse around the nose; hands: 21 points fanned out from each wrist
    a = np.linspace(0, 2 * math.pi, 68, endpoint=False)
    keypoints[0, 24:92] = body[0] + np.stack([0.035 * np.cos(a), 0.045 * np.sin(a)], 1)
    scores[0, 24:92] = 0.8
    for start, wrist in ((92, 7), (113, 4)):
        fan = np.linspace(-0.8, 0.8, 21) + t
        keypoints[0, start : start + 21] = body[wrist] + np.stack([0.03 * np.cos(fan), 0.03 * np.sin(fan) - 0.02], 1)
        scores[0, start : start + 21] = 0.7
    box = np.array([[0.3 * image_hw[1], 0.1 * image_hw[0], 0.7 * image_hw[1], 0.9 * image_hw[0]]])
    return PoseFrame(keypoints, scores, box, True, image_hw)


def synthetic_poses(num_frames: int, image_hw: tuple[int, int]) -> list[PoseFrame]:
    return [synthetic_pose(2 * math.pi * i / 24, image_hw) for i in range(num_frames)]


def synthetic_reference(height: int, width: int) -> np.ndarray:
    """RGB uint8 (H, W, 3): a gradient backdrop with a simple figure standing in the rest pose."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([40 + 120 * y / height, 90 + 60 * x / width, 160 - 80 * y / height], -1).astype(np.uint8)
    pts = (_REST_BODY * [width, height]).astype(np.int32)
    thick = max(2, width // 40)
    for a, b in ((1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (8, 11)):
        cv2.line(img, tuple(map(int, pts[a])), tuple(map(int, pts[b])), (230, 200, 170), thick)
    cv2.fillPoly(img, [pts[[2, 5, 11, 8]]], (200, 60, 60))
    cv2.circle(img, tuple(map(int, pts[0])), max(4, width // 14), (240, 205, 175), -1)
    return img


def puppet_sample(image_hw: tuple[int, int], num_frames: int):
    """The demo's default inputs: a held-out puppet of the toy model (a costume and a dance it was
    not trained on) with its ground-truth frames (``mimic.toy.samples.Sample``)."""
    from mimic.toy.samples import DEMO_SEED, make_sample

    return make_sample(DEMO_SEED, image_hw, num_frames, start=0.0)
