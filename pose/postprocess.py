"""DWPose post-processing: YOLOX decode + NMS, SimCC decode, OpenPose-134 layout, ``PoseFrame``.

Facts implemented here (spec §4.2-§4.4, released MimicMotion behaviour):

* YOLOX output (8400, 85) holds raw ``(x, y, log w, log h)`` regressions plus sigmoided
  objectness and 80 class probabilities for the anchor grids of strides 8/16/32 (80², 40², 20²
  cells, row-major, stride 8 first). Decode: ``xy = (pred_xy + grid)·stride``,
  ``wh = exp(pred_wh)·stride``, ``score = objectness · class prob``, boxes to xyxy, divided by the
  letterbox ratio (all in float32 as in the released code).
* Class-aware NMS (IoU threshold 0.45, "+1" pixel area convention, per-class score threshold
  0.1), then keep class 0 (person) with score > 0.3. Because the NMS is class-aware, boxes of
  other classes never suppress person boxes, so running it on the person column alone is exactly
  equivalent. No person box: the whole image is used as one box.
* SimCC: argmax per axis, score = min(max_x, max_y) (raw maxima), location −1 where the score is
  ≤ 0, divided by the split ratio 2.0, mapped back with ``kp/(288, 384)·scale + center − scale/2``.
* Neck = mean of the shoulders (COCO 5, 6), score 1.0 if both shoulder scores > 0.3 else 0.0,
  inserted at index 17 (134 points); body reordered to OpenPose-18; coordinates normalised by
  the image width/height.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mimic.spec import COCO_WHOLEBODY_KEYPOINTS, DETECTOR_INPUT_SIZE

YOLOX_STRIDES = (8, 16, 32)
NMS_IOU_THRESHOLD = 0.45
NMS_SCORE_THRESHOLD = 0.1
PERSON_SCORE_THRESHOLD = 0.3
PERSON_CLASS = 0
SIMCC_SPLIT_RATIO = 2.0
KEYPOINT_THRESHOLD = 0.3

NUM_COCO_WHOLEBODY = COCO_WHOLEBODY_KEYPOINTS
NUM_KEYPOINTS = 134
NUM_BODY = 18
NECK_INDEX = 17
FACE_SLICE = slice(24, 92)
LEFT_HAND_SLICE = slice(92, 113)
RIGHT_HAND_SLICE = slice(113, 134)
# OpenPose-18 body positions and the 134-array positions they are taken from (spec §4.4 item 3).
_OPENPOSE_TARGETS = (1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17)
_OPENPOSE_SOURCES = (17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3)


def yolox_anchor_grid(input_size: int = DETECTOR_INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Anchor cell coordinates (A, 2) as (x, y) and their strides (A, 1) for a square input.

    Cells are row-major per level, levels in stride order 8, 16, 32 (8400 anchors at 640).
    """
    grids, strides = [], []
    for stride in YOLOX_STRIDES:
        cells = input_size // stride
        ys, xs = np.divmod(np.arange(cells * cells), cells)
        grids.append(np.stack([xs, ys], axis=1))
        strides.append(np.full((cells * cells, 1), stride))
    return np.concatenate(grids), np.concatenate(strides)


def decode_yolox(raw: np.ndarray, ratio: float, grid: np.ndarray,
                 strides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode one image's raw YOLOX output (A, 85) to xyxy boxes (A, 4) and person scores (A,).

    Boxes are in the original image's pixels (divided by the letterbox ``ratio``); float32 like
    the released code (the ratio is applied as a float32 division). Only the person score
    (objectness × P(person)) is formed: the class-aware NMS never looks at the other classes
    when it keeps person boxes.
    """
    raw = np.asarray(raw, dtype=np.float32)
    centers = ((raw[:, :2].astype(np.float64) + grid) * strides).astype(np.float32)
    sizes = (np.exp(raw[:, 2:4]).astype(np.float64) * strides).astype(np.float32)
    scores = raw[:, 4] * raw[:, 5 + PERSON_CLASS]
    half = sizes / np.float32(2.0)
    boxes = np.concatenate([centers - half, centers + half], axis=1)
    boxes /= np.float32(ratio)
    return boxes, scores


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy single-class NMS with the "+1" pixel convention; indices in descending score order.

    A box is suppressed when its IoU with a kept box is > ``iou_threshold``.
    """
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep: list[int] = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = inter_w * inter_h
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return keep


def person_boxes(boxes: np.ndarray, person: np.ndarray) -> np.ndarray:
    """Person boxes (P, 4) float64 after class-aware NMS, in descending score order (may be empty).

    ``person`` (A,) are objectness × P(person). Class-aware NMS never lets another class
    suppress a person box, so NMS on the person scores alone equals the released 80-class run.
    """
    valid = person > NMS_SCORE_THRESHOLD
    if not valid.any():
        return np.zeros((0, 4), dtype=np.float64)
    valid_boxes, valid_scores = boxes[valid], person[valid]
    keep = nms(valid_boxes, valid_scores, NMS_IOU_THRESHOLD)
    kept_boxes = valid_boxes[keep].astype(np.float64)
    # The released code compares the float64 copy of the float32 score with 0.3.
    return kept_boxes[valid_scores[keep].astype(np.float64) > PERSON_SCORE_THRESHOLD]


def whole_image_box(height: int, width: int) -> np.ndarray:
    """The fallback "person" box (1, 4) covering the whole image, used when none is detected."""
    return np.array([[0.0, 0.0, float(width), float(height)]])


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray,
                 split_ratio: float = SIMCC_SPLIT_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """SimCC maxima: locations (N, K, 2) float32 in model-input pixels and scores (N, K) float32.

    score = min(max_x, max_y); locations are −1 (before the split division) where score ≤ 0.
    """
    n, k, _ = simcc_x.shape
    flat_x = simcc_x.reshape(n * k, -1)
    flat_y = simcc_y.reshape(n * k, -1)
    locs = np.stack([np.argmax(flat_x, axis=1), np.argmax(flat_y, axis=1)], axis=-1).astype(np.float32)
    scores = np.minimum(np.max(flat_x, axis=1), np.max(flat_y, axis=1))
    locs[scores <= 0.0] = -1
    locs /= np.float32(split_ratio)
    return locs.reshape(n, k, 2), scores.reshape(n, k)


def simcc_to_image(locs: np.ndarray, centers: np.ndarray, scales: np.ndarray,
                   input_wh: tuple[int, int]) -> np.ndarray:
    """Map SimCC locations (N, K, 2) back to image pixels (float64) for crops (centers, scales)."""
    size = np.asarray(input_wh, dtype=np.int64)
    return locs / size * scales[:, None, :] + centers[:, None, :] - scales[:, None, :] / 2


def to_openpose134(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO-WholeBody 133 points (P, 133, 2) + scores (P, 133) → OpenPose-ordered 134 points.

    Returns float64 keypoints (P, 134, 2) and scores (P, 134) (spec §4.4 items 1-3).
    """
    info = np.concatenate([keypoints, scores[..., None]], axis=-1).astype(np.float64)
    neck = info[:, [5, 6]].mean(axis=1)
    neck[:, 2] = np.logical_and(info[:, 5, 2] > KEYPOINT_THRESHOLD,
                                info[:, 6, 2] > KEYPOINT_THRESHOLD).astype(np.float64)
    info = np.insert(info, NECK_INDEX, neck, axis=1)
    info[:, list(_OPENPOSE_TARGETS)] = info[:, list(_OPENPOSE_SOURCES)]
    return info[..., :2], info[..., 2]


@dataclass(frozen=True, eq=False)
class PoseFrame:
    """The DWPose result of one image, in the OpenPose-134 layout of spec §4.4.

    ``keypoints`` (P, 134, 2) float64 are normalised by the image width/height; ``scores``
    (P, 134) float64 are raw SimCC confidences (neck 1.0/0.0). Index ranges: 0-17 body
    (OpenPose-18), 18-23 feet (unused), 24-91 face, 92-112 left hand, 113-133 right hand.
    ``boxes`` (P, 4) are the person boxes in image pixels (xyxy) the keypoints were cropped from;
    ``person_detected`` is False when no box passed the detector and the whole image was used.
    ``image_hw`` is the (height, width) of the image given to DWPose.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    person_detected: bool
    image_hw: tuple[int, int]

    def __post_init__(self) -> None:
        people = self.keypoints.shape[0]
        if self.keypoints.shape != (people, NUM_KEYPOINTS, 2) or self.scores.shape != (people, NUM_KEYPOINTS) \
                or self.boxes.shape != (people, 4):
            raise ValueError(f"inconsistent PoseFrame shapes {self.keypoints.shape}, "
                             f"{self.scores.shape}, {self.boxes.shape}")

    @property
    def num_people(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def candidate(self) -> np.ndarray:
        """``bodies.candidate``: (P·18, 2) body points, person-major."""
        return self.keypoints[:, :NUM_BODY].reshape(-1, 2)

    @property
    def body_score(self) -> np.ndarray:
        """``bodies.score``: (P, 18)."""
        return self.scores[:, :NUM_BODY]

    @property
    def subset(self) -> np.ndarray:
        """``bodies.subset``: (P, 18) float, flat index 18·p + j where score > 0.3, else −1."""
        flat = np.arange(self.num_people * NUM_BODY, dtype=np.float64).reshape(-1, NUM_BODY)
        return np.where(self.body_score > KEYPOINT_THRESHOLD, flat, -1.0)

    @property
    def hands(self) -> np.ndarray:
        """(2P, 21, 2): all left hands, then all right hands."""
        return np.concatenate([self.keypoints[:, LEFT_HAND_SLICE], self.keypoints[:, RIGHT_HAND_SLICE]])

    @property
    def hands_score(self) -> np.ndarray:
        """(2P, 21), same order as :attr:`hands`."""
        return np.concatenate([self.scores[:, LEFT_HAND_SLICE], self.scores[:, RIGHT_HAND_SLICE]])

    @property
    def faces(self) -> np.ndarray:
        """(P, 68, 2)."""
        return self.keypoints[:, FACE_SLICE]

    @property
    def faces_score(self) -> np.ndarray:
        """(P, 68)."""
        return self.scores[:, FACE_SLICE]

    def select(self, people: list[int]) -> PoseFrame:
        """A frame holding only the given people (in the given order)."""
        return PoseFrame(self.keypoints[people], self.scores[people], self.boxes[people],
                         self.person_detected, self.image_hw)

    def transformed(self, scale: np.ndarray, offset: np.ndarray) -> PoseFrame:
        """Apply ``p' = p·scale + offset`` (normalised coords) to every keypoint of every person."""
        return PoseFrame(self.keypoints * scale + offset, self.scores, self.boxes,
                         self.person_detected, self.image_hw)


def assemble_pose_frame(keypoints_px: np.ndarray, scores: np.ndarray, boxes: np.ndarray,
                        person_detected: bool, image_hw: tuple[int, int]) -> PoseFrame:
    """Build a :class:`PoseFrame` from 133-point pixel keypoints (P, 133, 2) and scores (P, 133)."""
    keypoints, scores134 = to_openpose134(keypoints_px, scores)
    height, width = image_hw
    keypoints = keypoints / np.array([float(width), float(height)])
    return PoseFrame(keypoints, scores134, np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                     bool(person_detected), (int(height), int(width)))
