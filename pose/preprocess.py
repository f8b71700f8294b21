"""DWPose pre-processing: YOLOX letterbox and RTMPose affine crops (spec §4.2, §4.3).

* Detector input: ``r = min(640/h, 640/w)``; ``cv2.resize`` to ``(int(w·r), int(h·r))`` with
  INTER_LINEAR; pasted at the **top-left** of a 640×640 canvas filled with **114**; HWC→CHW;
  raw 0-255 float32 values (no mean/std, no channel swap: frames are RGB).
* Pose input: box centre; scale = box (w, h) × **1.25**, then the short side enlarged so that
  w/h = 288/384 = 0.75; ``cv2.warpAffine`` (INTER_LINEAR, constant border 0) of that region to
  288×384 (the matrix is solved by ``cv2.getAffineTransform`` from three float32 points, as in
  the released code); the uint8 crop normalised with mean [123.675, 116.28, 103.53] and std
  [58.395, 57.12, 57.375] in float64, then cast to float32; HWC→CHW.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from mimic.spec import DETECTOR_INPUT_SIZE, POSE_INPUT_WH

LETTERBOX_FILL = 114
BOX_PADDING = 1.25
POSE_MEAN = np.array([123.675, 116.28, 103.53])
POSE_STD = np.array([58.395, 57.12, 57.375])
# (v − mean)/std for every uint8 value and channel, computed in float64 and cast once: a lookup
# gives exactly the float32 input of the float64 formula, ~15× faster.
_NORMALISE_LUT = ((np.arange(256)[:, None] - POSE_MEAN) / POSE_STD).astype(np.float32).reshape(1, 256, 3)


def letterbox(image: np.ndarray, size: int = DETECTOR_INPUT_SIZE) -> tuple[np.ndarray, float]:
    """Detector input (3, size, size) float32 and the resize ratio ``r`` for an RGB uint8 HWC image."""
    tensor = np.empty((3, size, size), dtype=np.float32)
    return tensor, _letterbox_into(tensor, image)


def letterbox_batch(images: Sequence[np.ndarray],
                    size: int = DETECTOR_INPUT_SIZE) -> tuple[np.ndarray, list[float]]:
    """:func:`letterbox` for several images: (N, 3, size, size) float32 and N ratios."""
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    return batch, [_letterbox_into(slot, image) for slot, image in zip(batch, images)]


def _letterbox_into(out: np.ndarray, image: np.ndarray) -> float:
    """Fill ``out`` (3, size, size) with the letterboxed ``image``; return the ratio."""
    size = out.shape[-1]
    height, width = image.shape[:2]
    ratio = min(size / height, size / width)
    new_w, new_h = max(1, int(width * ratio)), max(1, int(height * ratio))  # ≥ 1 only for extreme aspects
    out.fill(LETTERBOX_FILL)
    out[:, :new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    return ratio


def box_center_scale(box: np.ndarray, input_wh: tuple[int, int] = POSE_INPUT_WH) -> tuple[np.ndarray, np.ndarray]:
    """Crop centre (2,) and scale (w, h) (2,) for an xyxy box: ×1.25 padding, aspect fixed to w/h."""
    x1, y1, x2, y2 = (float(v) for v in box)
    center = np.array([x1 + x2, y1 + y2]) * 0.5
    w, h = np.array([x2 - x1, y2 - y1]) * BOX_PADDING
    aspect = input_wh[0] / input_wh[1]
    scale = np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])
    return center, scale


def crop_warp_matrix(center: np.ndarray, scale: np.ndarray,
                     input_wh: tuple[int, int] = POSE_INPUT_WH) -> np.ndarray:
    """2×3 affine (no rotation) mapping the crop region onto the model input.

    Three float32 point pairs (centre, centre − (0, w/2), and the point one more quarter turn
    around) are solved by ``cv2.getAffineTransform``, reproducing the released rounding.
    """
    dst_w, dst_h = input_wh
    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + np.array([0.0, scale[0] * -0.5])
    src[2] = _third_point(src[0], src[1])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + np.array([0.0, dst_w * -0.5])
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` plus the vector ``a − b`` turned by 90° anticlockwise (float32 arithmetic)."""
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=a.dtype)


def pose_crop(image: np.ndarray, box: np.ndarray,
              input_wh: tuple[int, int] = POSE_INPUT_WH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose-model input (3, h, w) float32 plus crop centre and scale for one xyxy ``box``."""
    center, scale = box_center_scale(box, input_wh)
    matrix = crop_warp_matrix(center, scale, input_wh)
    crop = cv2.warpAffine(image, matrix, input_wh, flags=cv2.INTER_LINEAR)
    return np.ascontiguousarray(cv2.LUT(crop, _NORMALISE_LUT).transpose(2, 0, 1)), center, scale


def pose_crops(image: np.ndarray, boxes: np.ndarray,
               input_wh: tuple[int, int] = POSE_INPUT_WH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`pose_crop` for every box: inputs (P, 3, h, w), centres (P, 2), scales (P, 2)."""
    count = len(boxes)
    inputs = np.empty((count, 3, input_wh[1], input_wh[0]), dtype=np.float32)
    centers = np.empty((count, 2))
    scales = np.empty((count, 2))
    for i, box in enumerate(boxes):
        inputs[i], centers[i], scales[i] = pose_crop(image, box, input_wh)
    return inputs, centers, scales
