"""Pose drawing: hand-computed golden pixels, and the fast renderer against a literal one."""
from __future__ import annotations

import colorsys
import math
import time

import cv2
import numpy as np
import pytest

from mimic.pose.draw import PoseDrawer, canvas_size, draw_pose
from mimic.pose.postprocess import PoseFrame

LIMBS_1BASED = [(2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
                (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18)]
COLORS = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0],
          [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255],
          [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]
HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
              (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]


def literal_draw(pose: PoseFrame, height: int, width: int) -> np.ndarray:
    """Spec §4.5 written out element by element, with the full-canvas ×0.6 pass."""
    short = min(height, width)
    ratio = 2160 / short if short != 2160 else 1
    canvas = np.zeros((int(height * ratio), int(width * ratio), 3), dtype=np.uint8)
    H, W = canvas.shape[:2]
    candidate, subset, score = pose.candidate, pose.subset, pose.body_score
    for i in range(17):
        for n in range(len(subset)):
            a, b = LIMBS_1BASED[i][0] - 1, LIMBS_1BASED[i][1] - 1
            if score[n][a] < 0.3 or score[n][b] < 0.3:
                continue
            ia, ib = int(subset[n][a]), int(subset[n][b])
            xs = [candidate[ia][0] * float(W), candidate[ib][0] * float(W)]
            ys = [candidate[ia][1] * float(H), candidate[ib][1] * float(H)]
            length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
            polygon = cv2.ellipse2Poly((int(np.mean(xs)), int(np.mean(ys))), (int(length / 2), 4), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, [int(float(c) * score[n][a] * score[n][b]) for c in COLORS[i]])
    canvas = (canvas * 0.6).astype(np.uint8)
    for i in range(18):
        for n in range(len(subset)):
            index = int(subset[n][i])
            if index == -1:
                continue
            x, y = candidate[index]
            cv2.circle(canvas, (int(x * W), int(y * H)), 4, [int(float(c) * score[n][i]) for c in COLORS[i]], -1)
    for peaks, scores in zip(pose.hands, pose.hands_score):
        for e, (a, b) in enumerate(HAND_EDGES):
            x1, y1, x2, y2 = int(peaks[a][0] * W), int(peaks[a][1] * H), int(peaks[b][0] * W), int(peaks[b][1] * H)
            level = int(scores[a] * scores[b] * 255)
            if x1 > 0.01 and y1 > 0.01 and x2 > 0.01 and y2 > 0.01:
                rgb = np.array(colorsys.hsv_to_rgb(e / 20.0, 1.0, 1.0)) * level
                cv2.line(canvas, (x1, y1), (x2, y2), rgb, thickness=2)
        for (x, y), s in zip(peaks, scores):
            x, y = int(x * W), int(y * H)
            if x > 0.01 and y > 0.01:
                cv2.circle(canvas, (x, y), 4, (0, 0, int(s * 255)), -1)
    for points, scores in zip(pose.faces, pose.faces_score):
        for (x, y), s in zip(points, scores):
            x, y = int(x * W), int(y * H)
            if x > 0.01 and y > 0.01:
                grey = int(s * 255)
                cv2.circle(canvas, (x, y), 3, (grey, grey, grey), -1)
    return cv2.cvtColor(cv2.resize(canvas, (width, height)), cv2.COLOR_BGR2RGB).transpose(2, 0, 1)


def blank_pose(people: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints at (0, 0) (never drawn: pixel 0 is not > 0.01) with zero scores."""
    return np.zeros((people, 134, 2)), np.zeros((people, 134))


def frame(keypoints: np.ndarray, scores: np.ndarray) -> PoseFrame:
    return PoseFrame(keypoints, scores, np.zeros((len(keypoints), 4)), True, (100, 100))


def random_pose(rng: np.random.Generator, people: int) -> PoseFrame:
    keypoints = rng.uniform(-0.1, 1.1, (people, 134, 2))
    keypoints[:, 24:] = keypoints[:, :1] + rng.normal(0, 0.05, (people, 110, 2))   # hands/face clustered
    scores = rng.choice([0.0, 0.29, 0.3, 0.31, 0.5, 0.8, 1.0, 1.2, -0.2], (people, 134)) + rng.uniform(0, 0.05, (people, 134))
    return frame(keypoints, scores)


def test_canvas_short_side_is_2160():
    assert canvas_size(1024, 576) == (3840, 2160)
    assert canvas_size(576, 1024) == (2160, 3840)
    assert canvas_size(2160, 4000) == (2160, 4000)
    assert canvas_size(100, 50) == (4320, 2160)


def test_horizontal_limb_colour_dim_and_channel_swap():
    keypoints, scores = blank_pose()
    keypoints[0, 1], keypoints[0, 2] = (0.3, 0.5), (0.7, 0.5)      # neck -> right shoulder: limb 0
    scores[0, 1] = scores[0, 2] = 0.9
    image = draw_pose(frame(keypoints, scores), 576, 576)           # canvas 2160², ×3.75 downscale
    assert image.shape == (3, 576, 576) and image.dtype == np.uint8
    # limb 0 [255, 0, 0]·0.9·0.9 -> int(206.55) = 206, dimmed int(206·0.6) = 123; written as BGR,
    # so it shows in the blue channel. Output (288, 288) samples canvas rows/cols 1081-1082, inside
    # the 9-px band around y = 1080, far from both joints: a uniform region, exact under bilinear.
    assert image[:, 288, 288].tolist() == [0, 0, 123]
    # neck joint [255, 85, 0]·0.9 = (229, 76, 0), not dimmed; output (172, 288) reads canvas
    # (646-647, 1081-1082), inside the r=4 disc around (648, 1080).
    assert image[:, 288, 172].tolist() == [0, 76, 229]


@pytest.mark.parametrize("low, drawn", [(0.29, False), (0.31, True)])
def test_body_threshold(low, drawn):
    keypoints, scores = blank_pose()
    keypoints[0, 1], keypoints[0, 2] = (0.3, 0.5), (0.7, 0.5)
    scores[0, 1], scores[0, 2] = 0.9, low
    image = draw_pose(frame(keypoints, scores), 576, 576)
    limb_blue = int(int(255 * 0.9 * low) * 0.6)
    assert image[:, 288, 288].tolist() == ([0, 0, limb_blue] if drawn else [0, 0, 0])
    # the joint needs score > 0.3: right shoulder [255, 170, 0]·s at output x = 0.7·576 = 403
    assert image[:, 288, 403].tolist() == ([0, int(170 * low), int(255 * low)] if drawn else [0, 0, 0])


def test_hand_edge_hsv_colour_and_red_dot():
    keypoints, scores = blank_pose()
    hand = slice(92, 113)                                            # left hand of person 0
    keypoints[0, hand.start + 5] = (100.5 / 2160, 200.5 / 2160)          # edge 5 joins points 5 and 6
    keypoints[0, hand.start + 6] = (300.5 / 2160, 200.5 / 2160)
    scores[0, hand.start + 5] = scores[0, hand.start + 6] = 0.8
    keypoints[0, hand.start + 10] = (1000.5 / 2160, 1000.5 / 2160)       # a lone dot, score 0.5
    scores[0, hand.start + 10] = 0.5
    image = draw_pose(frame(keypoints, scores), 2160, 2160)         # sr = 1: the canvas itself
    # (coordinates are pixel + 0.5 so that int(x·2160) is the intended pixel despite rounding)
    # HSV(5/20, 1, 1) = (0.5, 1, 0); level int(0.8·0.8·255) = int(163.2) = 163; OpenCV rounds
    # 81.5 to 82. Written (82, 163, 0) as BGR -> RGB (0, 163, 82).
    assert image[:, 200, 200].tolist() == [0, 163, 82]
    # dots (0, 0, int(s·255)) as BGR -> red in RGB
    assert image[:, 1000, 1000].tolist() == [127, 0, 0]
    assert image[:, 200, 100].tolist() == [int(0.8 * 255), 0, 0]     # edge end covered by its dot


def test_face_dot_grey_and_edge_rule():
    keypoints, scores = blank_pose()
    keypoints[0, 30] = (500.5 / 2160, 700.5 / 2160)
    scores[0, 30] = 0.5
    keypoints[0, 31] = (0.0, 900.5 / 2160)                             # x pixel 0: not > 0.01, not drawn
    scores[0, 31] = 1.0
    keypoints[0, 92], keypoints[0, 93] = (0.0, 0.5), (0.5, 0.5)      # hand edge 0 with an end at x = 0
    scores[0, 92] = scores[0, 93] = 1.0
    image = draw_pose(frame(keypoints, scores), 2160, 2160)
    assert image[:, 700, 500].tolist() == [127, 127, 127]
    assert image[:, 900, 2].tolist() == [0, 0, 0]
    assert image[:, 1080, 540].tolist() == [0, 0, 0]                 # middle of the skipped edge
    assert image[:, 1080, 1080].tolist() == [255, 0, 0]              # its visible end's red dot


def test_full_render_is_deterministic():
    pose = random_pose(np.random.default_rng(1), 2)
    drawer = PoseDrawer(1024, 576)
    first = drawer(pose)
    drawer(random_pose(np.random.default_rng(2), 3))                 # reuse must not leak pixels
    assert np.array_equal(drawer(pose), first)
    assert np.array_equal(draw_pose(pose, 1024, 576), first)
    assert first.any()


@pytest.mark.parametrize("height, width", [(1024, 576), (576, 1024), (200, 130)])
def test_fast_renderer_matches_literal_implementation(height, width):
    rng = np.random.default_rng(height)
    drawer = PoseDrawer(height, width)
    poses = [random_pose(rng, people) for people in (1, 1, 2, 3, 0)]
    exact = random_pose(rng, 2)
    exact.scores[:, :18] = 0.3        # limbs drawn (not < 0.3) with subset -1 (not > 0.3) endpoints
    for pose in [*poses, exact]:
        assert np.array_equal(drawer(pose), literal_draw(pose, height, width))


def test_fast_renderer_speed():
    """Frames/s at 1024×576 for a realistic single-person pose (printed; faster than literal)."""
    rng = np.random.default_rng(5)
    poses = []
    for _ in range(20):
        keypoints = np.array([0.5, 0.45]) + rng.normal(0, 0.15, (1, 134, 2))
        poses.append(frame(keypoints, rng.uniform(0.2, 1.0, (1, 134))))
    drawer = PoseDrawer(1024, 576)
    drawer(poses[0])
    start = time.perf_counter()
    for pose in poses:
        drawer(pose)
    fast = (time.perf_counter() - start) / len(poses)
    start = time.perf_counter()
    for pose in poses[:3]:
        literal_draw(pose, 1024, 576)
    literal = (time.perf_counter() - start) / 3
    print(f"draw_pose 1024x576: {1 / fast:.0f} frames/s (literal implementation {1 / literal:.1f} frames/s)")
    assert fast < literal


# ---------------------------------------------------------------------- drawing toggles (DrawParts)
def without(pose: PoseFrame, body: bool = True, hands: bool = True, face: bool = True) -> PoseFrame:
    """``pose`` with the excluded parts removed from the data: body scores 0 (no limb passes 0.3, no
    joint is in the subset), hand/face points at (0, 0) (pixel 0 is never drawn)."""
    keypoints, scores = pose.keypoints.copy(), pose.scores.copy()
    if not body:
        scores[:, :18] = 0.0
    if not hands:
        keypoints[:, 92:134] = 0.0
    if not face:
        keypoints[:, 24:92] = 0.0
    return PoseFrame(keypoints, scores, pose.boxes, pose.person_detected, pose.image_hw)


@pytest.mark.parametrize("body, hands, face", [(False, True, True), (True, False, True), (True, True, False)])
def test_an_excluded_part_draws_nothing_and_the_rest_is_unchanged(body, hands, face):
    """Every pixel: drawing with a part switched off equals the released drawing of the pose with
    that part's keypoints removed (nothing of it drawn, every other pixel as with all parts on)."""
    from mimic.pose.draw import DrawParts

    pose = random_pose(np.random.default_rng(11), 2)
    got = PoseDrawer(200, 130, DrawParts(body=body, hands=hands, face=face))(pose)
    assert np.array_equal(got, literal_draw(without(pose, body, hands, face), 200, 130))
    assert not np.array_equal(got, PoseDrawer(200, 130)(pose))  # the part was there to leave out


def test_default_parts_are_the_released_drawing_and_none_is_black():
    from mimic.pose.draw import ALL_PARTS, DrawParts

    pose = random_pose(np.random.default_rng(12), 2)
    released = literal_draw(pose, 200, 130)
    assert ALL_PARTS == DrawParts() == DrawParts(body=True, hands=True, face=True)
    for image in (PoseDrawer(200, 130)(pose), PoseDrawer(200, 130, DrawParts())(pose), draw_pose(pose, 200, 130, ALL_PARTS)):
        assert np.array_equal(image, released)
    assert not draw_pose(pose, 200, 130, DrawParts(False, False, False)).any()


def test_draw_parts_reach_drawn_poses_and_render_pose_images():
    from types import SimpleNamespace

    from mimic.pose.draw import DrawParts
    from mimic.pose.extract import render_pose_images
    from mimic.pose.images import DrawnPoses

    rng = np.random.default_rng(13)
    poses = [random_pose(rng, 1) for _ in range(2)]
    no_hands, no_face = DrawParts(hands=False), DrawParts(face=False)
    drawn = DrawnPoses(np.zeros((3, 64, 48), np.uint8), poses, 64, 48, no_hands).get([1])
    assert np.array_equal(drawn[0], draw_pose(without(poses[0], hands=False), 64, 48))
    assert not np.array_equal(drawn[0], draw_pose(poses[0], 64, 48))
    images, _ = render_pose_images(poses[0], poses[1:], (64, 48), (64, 48), parts=no_face)
    assert np.array_equal(images[0], draw_pose(without(poses[0], face=False), 64, 48))  # the reference: not retargeted
    assert DrawParts.from_settings(SimpleNamespace(draw_body=True, draw_hands=False, draw_face=True)) == no_hands
    assert DrawParts.from_settings(object()) == DrawParts()
    with pytest.raises(TypeError, match="DrawParts.hands must be True or False"):
        DrawParts(hands="no")
