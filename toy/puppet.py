"""A puppet: a body build, joint angles -> whole-body keypoints (DWPose's OpenPose-134 layout), and
a costume drawn over those keypoints (thick limbs, a torso, a head, hands and shoes).

Everything is deterministic for its inputs. Coordinates are pixels of an (H, W) frame until
:func:`pose_frame` normalises them as DWPose does (x / W, y / H).

Angles (radians): a limb angle of 0 points straight down; positive swings the limb away from the
body's midline (outwards). ``lean`` tilts the torso (positive: neck to the image's right), ``yaw``
turns the body about the vertical axis (widths shrink with cos(yaw), the face shifts with sin(yaw)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mimic.pose.postprocess import NUM_KEYPOINTS, PoseFrame

# OpenPose-18 body indices.
NOSE, NECK, R_SHO, R_ELB, R_WRI, L_SHO, L_ELB, L_WRI, R_HIP, R_KNEE, R_ANK, L_HIP, L_KNEE, L_ANK, R_EYE, L_EYE, R_EAR, L_EAR = range(18)
FEET = slice(18, 24)  # left big toe, small toe, heel, right big toe, small toe, heel (not drawn by DWPose)
FACE = slice(24, 92)
LEFT_HAND = slice(92, 113)
RIGHT_HAND = slice(113, 134)
BODY_SCORE, FACE_SCORE, HAND_SCORE = 0.9, 0.8, 0.7


@dataclass(frozen=True)
class Build:
    """Where the puppet stands and how tall it is (pixels of the frame it is drawn in)."""

    height: float  # from the ankles to the top of the head
    hip_x: float
    hip_y: float


@dataclass(frozen=True)
class PoseState:
    """Joint angles and root offsets of one frame."""

    r_arm: float = 0.2
    r_elbow: float = 0.1
    l_arm: float = 0.2
    l_elbow: float = 0.1
    r_leg: float = 0.08
    r_knee: float = 0.0
    l_leg: float = 0.08
    l_knee: float = 0.0
    lean: float = 0.0
    yaw: float = 0.0
    dx: float = 0.0  # root offset, fraction of the puppet's height
    dy: float = 0.0


REST = PoseState()

# Segment lengths as fractions of the puppet's height.
TORSO, NECK_TO_NOSE, HEAD_RX, HEAD_RY = 0.30, 0.085, 0.062, 0.078
SHOULDER_HALF, HIP_HALF = 0.105, 0.062
UPPER_ARM, FOREARM, THIGH, SHIN = 0.15, 0.14, 0.215, 0.215


def _down(angle: float, side: float, squash: float) -> np.ndarray:
    """Unit direction of a limb: angle 0 points down, positive outwards on ``side`` (-1 = image left)."""
    return np.array([side * math.sin(angle) * squash, math.cos(angle)])


def _arm(shoulder, arm, elbow, side, length, squash) -> tuple[np.ndarray, np.ndarray]:
    e = shoulder + UPPER_ARM * length * _down(arm, side, squash)
    w = e + FOREARM * length * _down(arm + elbow, side, squash)
    return e, w


def keypoints(build: Build, s: PoseState) -> np.ndarray:
    """(134, 2) pixel coordinates of every DWPose keypoint for the build in state ``s``."""
    u = build.height
    squash = 0.62 + 0.38 * abs(math.cos(s.yaw))  # limbs swinging sideways foreshorten as the body turns
    width = max(0.35, abs(math.cos(s.yaw)))
    p = np.zeros((NUM_KEYPOINTS, 2))
    hip = np.array([build.hip_x + s.dx * u, build.hip_y + s.dy * u])
    up = np.array([math.sin(s.lean), -math.cos(s.lean)])
    across = np.array([math.cos(s.lean), math.sin(s.lean)])  # towards the image's right
    neck = hip + TORSO * u * up
    p[NECK] = neck
    p[R_SHO] = neck - SHOULDER_HALF * u * width * across
    p[L_SHO] = neck + SHOULDER_HALF * u * width * across
    p[R_HIP] = hip - HIP_HALF * u * width * across
    p[L_HIP] = hip + HIP_HALF * u * width * across
    p[R_ELB], p[R_WRI] = _arm(p[R_SHO], s.r_arm, s.r_elbow, -1.0, u, squash)
    p[L_ELB], p[L_WRI] = _arm(p[L_SHO], s.l_arm, s.l_elbow, 1.0, u, squash)
    p[R_KNEE] = p[R_HIP] + THIGH * u * _down(s.r_leg, -1.0, squash)
    p[R_ANK] = p[R_KNEE] + SHIN * u * _down(s.r_leg - s.r_knee, -1.0, squash)
    p[L_KNEE] = p[L_HIP] + THIGH * u * _down(s.l_leg, 1.0, squash)
    p[L_ANK] = p[L_KNEE] + SHIN * u * _down(s.l_leg - s.l_knee, 1.0, squash)
    turn = math.sin(s.yaw)
    head = neck + NECK_TO_NOSE * u * up
    p[NOSE] = head + np.array([0.45 * HEAD_RX * u * turn, 0.0])
    eye_dx, eye_dy = 0.028 * u * width, -0.022 * u
    p[R_EYE] = p[NOSE] + (-eye_dx, eye_dy)
    p[L_EYE] = p[NOSE] + (eye_dx, eye_dy)
    p[R_EAR] = head + (-HEAD_RX * u * (0.95 - 0.3 * turn), -0.01 * u)
    p[L_EAR] = head + (HEAD_RX * u * (0.95 + 0.3 * turn), -0.01 * u)
    for k, (ank, side) in enumerate(((L_ANK, 1.0), (R_ANK, -1.0))):
        base = 18 + 3 * k
        p[base] = p[ank] + (side * 0.045 * u * width, 0.035 * u)
        p[base + 1] = p[ank] + (side * 0.02 * u * width, 0.04 * u)
        p[base + 2] = p[ank] + (-side * 0.01 * u, 0.03 * u)
    p[FACE] = _face(head, u, turn, width)
    p[LEFT_HAND] = _hand(p[L_ELB], p[L_WRI], u)
    p[RIGHT_HAND] = _hand(p[R_ELB], p[R_WRI], u)
    return p


def _face(head: np.ndarray, u: float, turn: float, width: float) -> np.ndarray:
    """68 points in the iBUG order: jaw, brows, nose, eyes, mouth (a simple template)."""
    rx, ry = HEAD_RX * u * width, HEAD_RY * u
    shift = np.array([0.45 * HEAD_RX * u * turn, 0.0])
    pts = []
    for a in np.linspace(math.pi * 0.95, math.pi * 0.05, 17):  # jaw: ear to ear along the lower half
        pts.append((-math.cos(a) * rx, math.sin(a) * ry * 0.95))
    for side in (-1, 1):  # brows
        for k in range(5):
            pts.append((side * (0.15 + 0.13 * k) * rx if side > 0 else -(0.67 - 0.13 * k) * rx, -0.42 * ry))
    for k in range(4):  # nose bridge
        pts.append((0.0, (-0.3 + 0.12 * k) * ry))
    for k in range(5):  # nostrils
        pts.append(((k - 2) * 0.08 * rx, 0.2 * ry))
    for side in (-1, 1):  # eyes, 6 points each
        cx = side * 0.36 * rx
        for a in np.linspace(0, 2 * math.pi, 6, endpoint=False):
            pts.append((cx + 0.12 * rx * math.cos(a + math.pi), -0.25 * ry + 0.06 * ry * math.sin(a + math.pi)))
    for k in range(12):  # outer lip
        a = 2 * math.pi * k / 12
        pts.append((0.3 * rx * math.cos(a + math.pi), 0.45 * ry + 0.1 * ry * math.sin(a + math.pi)))
    for k in range(8):  # inner lip
        a = 2 * math.pi * k / 8
        pts.append((0.18 * rx * math.cos(a + math.pi), 0.45 * ry + 0.04 * ry * math.sin(a + math.pi)))
    return head + shift + np.array(pts)


def _hand(elbow: np.ndarray, wrist: np.ndarray, u: float) -> np.ndarray:
    """21 points: the wrist, then 4 joints per finger, fanned around the forearm's direction."""
    d = wrist - elbow
    base = math.atan2(d[1], d[0])
    pts = [wrist]
    for f in range(5):
        a = base + (f - 2) * 0.32
        step = 0.016 * u * (0.8 if f == 0 else 1.0)
        pts += [wrist + (j + 1) * step * np.array([math.cos(a), math.sin(a)]) for j in range(4)]
    return np.array(pts)


def pose_frame(points: np.ndarray, hw: tuple[int, int]) -> PoseFrame:
    """Pixel keypoints -> a one-person :class:`PoseFrame` (normalised, DWPose-like scores)."""
    h, w = hw
    kp = (points / np.array([float(w), float(h)]))[None]
    scores = np.zeros((1, NUM_KEYPOINTS))
    scores[0, :24] = BODY_SCORE
    scores[0, FACE] = FACE_SCORE
    scores[0, 92:] = HAND_SCORE
    lo, hi = points.min(0), points.max(0)
    return PoseFrame(kp, scores, np.array([[lo[0], lo[1], hi[0], hi[1]]]), True, (h, w))


@dataclass(frozen=True)
class Costume:
    """RGB colours of the body parts."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]
    sleeve: tuple[int, int, int]  # upper arms
    cuff: tuple[int, int, int]  # forearms (skin for short sleeves)
    pants: tuple[int, int, int]  # thighs
    shins: tuple[int, int, int]  # skin for shorts
    shoes: tuple[int, int, int]


def limb_widths(u: float) -> dict[str, int]:
    return {"arm": max(3, int(round(0.062 * u))), "leg": max(4, int(round(0.08 * u))), "hand": max(2, int(round(0.034 * u)))}


def _pt(p: np.ndarray, scale: int) -> tuple[int, int]:
    return int(round(p[0] * scale)), int(round(p[1] * scale))


def draw_puppet(image: np.ndarray, points: np.ndarray, costume: Costume, u: float, mask: np.ndarray | None = None) -> None:
    """Draw the puppet into ``image`` (H, W, 3 uint8 RGB) in place; ``mask`` (H, W uint8) gets 255 where drawn."""
    shift = 3  # sub-pixel precision for OpenCV's fixed-point drawing
    sc = 1 << shift
    lw = limb_widths(u)
    targets = [(image, None)] + ([(mask, 255)] if mask is not None else [])

    def line(a, b, color, width):
        for img, fixed in targets:
            cv2.line(img, _pt(a, sc), _pt(b, sc), fixed if fixed is not None else color, width, cv2.LINE_AA, shift)
            r = width / 2
            cv2.circle(img, _pt(a, sc), int(r * sc), fixed if fixed is not None else color, -1, cv2.LINE_AA, shift)
            cv2.circle(img, _pt(b, sc), int(r * sc), fixed if fixed is not None else color, -1, cv2.LINE_AA, shift)

    def poly(pts, color):
        for img, fixed in targets:
            cv2.fillConvexPoly(img, np.array([_pt(q, sc) for q in pts], dtype=np.int32), fixed if fixed is not None else color, cv2.LINE_AA, shift)

    def ellipse(center, axes, angle, color):
        for img, fixed in targets:
            cv2.ellipse(img, _pt(center, sc), (int(axes[0] * sc), int(axes[1] * sc)), angle, 0, 360,
                        fixed if fixed is not None else color, -1, cv2.LINE_AA, shift)

    p = points
    # legs and shoes
    for hip, knee, ank, toe in ((R_HIP, R_KNEE, R_ANK, 21), (L_HIP, L_KNEE, L_ANK, 18)):
        line(p[knee], p[ank], costume.shins, lw["leg"])
        line(p[hip], p[knee], costume.pants, lw["leg"])
        ellipse((p[ank] + p[toe]) / 2 + (0, 0.01 * u), (0.05 * u, 0.026 * u), 0, costume.shoes)
    # torso: shirt between shoulders and hips, a pants band at the hips
    neck_w = (p[L_SHO] - p[R_SHO]) * 0.5
    poly([p[R_SHO] - 0.1 * neck_w, p[L_SHO] + 0.1 * neck_w, p[L_HIP] + 0.25 * neck_w, p[R_HIP] - 0.25 * neck_w], costume.shirt)
    hip_mid = (p[R_HIP] + p[L_HIP]) / 2
    band = (p[NECK] - hip_mid) * 0.12
    poly([p[R_HIP] - 0.25 * neck_w + band, p[L_HIP] + 0.25 * neck_w + band, p[L_HIP] + 0.2 * neck_w, p[R_HIP] - 0.2 * neck_w], costume.pants)
    # head: hair cap behind, then the face
    center = (p[R_EAR] + p[L_EAR]) / 2
    rx = max(2.0, np.linalg.norm(p[L_EAR] - p[R_EAR]) / 2)
    ellipse(center + (0, -0.012 * u), (rx * 1.02, HEAD_RY * u * 1.02), 0, costume.hair)
    ellipse(center + (0, 0.008 * u), (rx * 0.92, HEAD_RY * u * 0.9), 0, costume.skin)
    line(p[NECK], p[NECK] + (center - p[NECK]) * 0.3, costume.skin, lw["arm"])
    # arms on top, hands at the wrists
    for sho, elb, wri, hand in ((R_SHO, R_ELB, R_WRI, RIGHT_HAND), (L_SHO, L_ELB, L_WRI, LEFT_HAND)):
        line(p[elb], p[wri], costume.cuff, lw["arm"])
        line(p[sho], p[elb], costume.sleeve, lw["arm"])
        tips = p[hand][[8, 12, 16]].mean(0)
        ellipse(p[wri] + 0.55 * (tips - p[wri]), (lw["hand"] * 1.15, lw["hand"] * 1.15), 0, costume.skin)


NUM_BACKDROPS = 8


def backdrop(index: int, hw: tuple[int, int]) -> np.ndarray:
    """Stage backdrop ``index`` of :data:`NUM_BACKDROPS` (each sample picks one at random).

    A fixed set with shared per-channel statistics rather than fresh colours per sample: the SVD
    VAE and UNet end in GroupNorms with one or two channels per group at toy widths, which drop a
    frame's per-channel mean and scale; over backdrops with the same statistics these are nearly
    fixed and the models only have to carry the puppet's colours relative to them."""
    img = background(np.random.default_rng([int(index) % NUM_BACKDROPS, 99]), hw).astype(np.float64)
    # every backdrop gets the same per-channel mean and spread (they differ in layout and hue)
    flat = img.reshape(-1, 3)
    img = (img - flat.mean(0)) / np.maximum(flat.std(0), 1.0) * BACKDROP_STD + BACKDROP_MEAN
    return np.clip(img, 0, 255).round().astype(np.uint8)


BACKDROP_MEAN, BACKDROP_STD = 120.0, 40.0


def background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """A smooth random backdrop: a vertical two-colour gradient and a floor band."""
    h, w = hw
    top, bottom, floor = (rng.uniform(20, 235, 3) for _ in range(3))
    t = np.linspace(0, 1, h)[:, None, None]
    img = top * (1 - t) + bottom * t
    img = np.repeat(img, w, axis=1)
    horizon = int(h * rng.uniform(0.78, 0.9))
    img[horizon:] = floor
    tilt = rng.uniform(-25, 25) * (np.linspace(-1, 1, w)[None, :, None])
    return np.clip(img + tilt, 0, 255).astype(np.uint8)


SKIN_TONES = ((255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 30))


PALETTE = ((230, 40, 40), (40, 170, 60), (40, 80, 220), (245, 210, 40), (240, 130, 30), (150, 60, 200), (30, 200, 210),
           (240, 240, 240), (25, 25, 30), (230, 90, 170), (120, 70, 30), (110, 120, 130))


def random_costume(rng: np.random.Generator, avoid: np.ndarray) -> Costume:
    """Colours per part from :data:`PALETTE` (skin from :data:`SKIN_TONES`), jittered a little; each at
    least 90 (L2, RGB) from the backdrop's mean colour ``avoid`` where the palette allows."""

    def pick(base=None):
        for _ in range(100):
            c = np.asarray(base if base is not None else PALETTE[rng.integers(len(PALETTE))], dtype=np.float64)
            c = np.clip(c + rng.normal(0, 8, 3), 0, 255)
            if np.linalg.norm(c - avoid) >= 90:
                return tuple(int(v) for v in c)
            base = None
        return tuple(int(v) for v in (255 - avoid))

    skin = pick(SKIN_TONES[rng.integers(len(SKIN_TONES))])
    shirt = pick()
    sleeve = shirt if rng.random() < 0.6 else pick()
    cuff = skin if rng.random() < 0.5 else sleeve
    pants = pick()
    shins = pants if rng.random() < 0.7 else skin
    return Costume(skin=skin, hair=pick(), shirt=shirt, sleeve=sleeve, cuff=cuff, pants=pants, shins=shins, shoes=pick())
