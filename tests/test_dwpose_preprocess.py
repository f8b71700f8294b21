"""DWPose pre/post-processing against hand-computed values and planted-output ONNX models."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mimic.pose.detector import DWPoseDetector
from mimic.pose.postprocess import decode_simcc, decode_yolox, nms, yolox_anchor_grid
from mimic.pose.preprocess import POSE_MEAN, POSE_STD, box_center_scale, crop_warp_matrix, letterbox
from mimic.model.tiny_dwpose import planted_detector, planted_pose, save_model

# OpenPose-18 body index -> COCO-WholeBody index, from the joint names (None = neck).
OPENPOSE_FROM_COCO = {0: 0, 1: None, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16,
                      11: 11, 12: 13, 13: 15, 14: 2, 15: 1, 16: 4, 17: 3}


def anchor_index(stride: int, gx: int, gy: int) -> int:
    """Row of the (8400, 85) YOLOX output for a grid cell (levels 80², 40², 20² in stride order)."""
    offset = {8: 0, 16: 6400, 32: 6400 + 1600}[stride]
    return offset + gy * (640 // stride) + gx


def expected_crop(box):
    """Centre and scale by hand: ×1.25, then the short side grown to w/h = 0.75."""
    x1, y1, x2, y2 = box
    w, h = (x2 - x1) * 1.25, (y2 - y1) * 1.25
    sw, sh = (w, w / 0.75) if w > 0.75 * h else (0.75 * h, h)
    return ((x1 + x2) / 2, (y1 + y2) / 2), (sw, sh)


# Planted detector: A (best person), B (overlaps A, lower: suppressed), C (second person),
# D (a class-1 object), E (person score 0.25: survives NMS, dropped by the 0.3 filter).
LN4, LN8, LN3, LN6 = math.log(4), math.log(8), math.log(3), math.log(6)
PLANTED_ANCHORS = {
    anchor_index(32, 10, 7): ([0.25, 0.5, LN4, LN8], 0.9, {0: 0.8}),
    anchor_index(32, 11, 7): ([0.0, 0.5, LN4, LN8], 0.9, {0: 0.7}),
    anchor_index(16, 5, 8): ([0.5, 0.5, LN3, LN6], 0.9, {0: 0.6}),
    anchor_index(8, 60, 50): ([0.5, 0.5, 0.0, 0.0], 0.95, {0: 0.05, 1: 0.99}),
    anchor_index(8, 20, 20): ([0.5, 0.5, 0.0, 0.0], 0.5, {0: 0.5}),
}
# Boxes by hand (ratio 1): A centre ((10.25)·32, 7.5·32) = (328, 240), size (4·32, 8·32).
BOX_A = (328 - 64, 240 - 128, 328 + 64, 240 + 128)
BOX_C = (88 - 24, 136 - 48, 88 + 24, 136 + 48)     # centre (5.5·16, 8.5·16), size (3·16, 6·16)
ZERO_ROWS = (20, 100)                               # no response: score 0, location -1


def planted_raw() -> np.ndarray:
    raw = np.zeros((8400, 85), dtype=np.float32)
    for row, (box, obj, classes) in PLANTED_ANCHORS.items():
        raw[row, :4] = box
        raw[row, 4] = obj
        for cls, prob in classes.items():
            raw[row, 5 + cls] = prob
    return raw


def planted_peaks():
    k = np.arange(133)
    ix, iy = (37 + 4 * k) % 576, (11 + 5 * k) % 768
    vx, vy = 0.5 + 0.003 * k, 0.9 - 0.002 * k
    vx[7] = 0.2                                       # score = min(0.2, vy) = 0.2
    simcc_x = np.zeros((133, 576), dtype=np.float32)
    simcc_y = np.zeros((133, 768), dtype=np.float32)
    simcc_x[k, ix] = vx
    simcc_y[k, iy] = vy
    for row in ZERO_ROWS:
        simcc_x[row] = 0
        simcc_y[row] = 0
    return simcc_x, simcc_y, ix, iy, vx.astype(np.float32), vy.astype(np.float32)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted")
    simcc_x, simcc_y, *_ = planted_peaks()
    det = save_model(planted_detector(planted_raw()), folder / "yolox_l.onnx")
    pose = save_model(planted_pose(simcc_x, simcc_y), folder / "dw-ll_ucoco_384.onnx")
    return DWPoseDetector(det, pose)


def expected_body_and_all(box, width, height):
    """The 134 normalised keypoints and scores for one planted crop, built by hand."""
    _, _, ix, iy, vx, vy = planted_peaks()
    (cx, cy), (sw, sh) = expected_crop(box)
    scores = np.minimum(vx, vy).astype(np.float64)
    locx, locy = ix.astype(np.float64), iy.astype(np.float64)
    for row in ZERO_ROWS:
        scores[row], locx[row], locy[row] = 0.0, -1.0, -1.0
    coco_x = (locx / 2) / 288 * sw + cx - sw / 2
    coco_y = (locy / 2) / 384 * sh + cy - sh / 2
    coco = np.stack([coco_x, coco_y], axis=1)
    points = np.zeros((134, 2))
    point_scores = np.zeros(134)
    for openpose, coco_index in OPENPOSE_FROM_COCO.items():
        if coco_index is None:
            points[openpose] = (coco[5] + coco[6]) / 2
            point_scores[openpose] = 1.0 if scores[5] > 0.3 and scores[6] > 0.3 else 0.0
        else:
            points[openpose], point_scores[openpose] = coco[coco_index], scores[coco_index]
    points[18:], point_scores[18:] = coco[17:], scores[17:]
    return points / [width, height], point_scores


def test_letterbox_pastes_top_left_on_114():
    image = np.full((300, 200, 3), 50, dtype=np.uint8)        # r = min(640/300, 640/200) = 2.1333
    tensor, ratio = letterbox(image)
    assert ratio == pytest.approx(640 / 300)
    assert tensor.shape == (3, 640, 640) and tensor.dtype == np.float32
    new_w, new_h = int(200 * 640 / 300), 640                  # (426, 640)
    assert (tensor[:, :new_h, :new_w] == 50).all()
    assert (tensor[:, :, new_w:] == 114).all()
    tensor, ratio = letterbox(np.full((200, 300, 3), 50, dtype=np.uint8))   # landscape: pad below
    new_h = int(200 * 640 / 300)                                            # 426
    assert (tensor[:, :new_h] == 50).all() and (tensor[:, new_h:] == 114).all()


def test_box_center_scale_by_hand():
    center, scale = box_center_scale(np.array([100.0, 50.0, 300.0, 450.0]))
    assert center.tolist() == [200.0, 250.0]
    assert scale.tolist() == [375.0, 500.0]                   # (250, 500): tall, width grown to 0.75·500
    center, scale = box_center_scale(np.array([0.0, 0.0, 400.0, 100.0]))
    assert scale == pytest.approx([500.0, 500.0 / 0.75])       # (500, 125): wide, height grown


def test_crop_warp_matrix_is_scale_and_shift():
    matrix = crop_warp_matrix(np.array([328.0, 240.0]), np.array([240.0, 320.0]))
    s = 288 / 240
    assert matrix == pytest.approx(np.array([[s, 0, 144 - s * 328], [0, s, 192 - s * 240]]), abs=1e-4)


def test_nms_uses_plus_one_areas():
    # Same 10-px-tall boxes shifted by d = 3.6: IoU (10 - d)/(10 + d) = 0.47 > 0.45 with the +1
    # convention (suppressed), but (9 - d)/(9 + d) = 0.43 without it.
    # At d = 4: 60/140 = 0.43 with "+1" everywhere (kept); "+1" only in the intersection would
    # give 60/102 (suppressed).
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)
    for shift, kept in ((3.6, [0, 2]), (4.0, [0, 1, 2])):
        boxes = np.array([[0, 0, 9, 9], [shift, 0, 9 + shift, 9], [50, 50, 60, 60]], dtype=np.float32)
        assert nms(boxes, scores, 0.45) == kept


def test_decode_yolox_one_anchor_by_hand():
    grid, strides = yolox_anchor_grid()
    assert grid.shape == (8400, 2) and strides[0, 0] == 8 and strides[-1, 0] == 32
    raw = planted_raw()
    boxes, scores = decode_yolox(raw, 0.5, grid, strides)
    row = anchor_index(32, 10, 7)
    assert boxes[row] == pytest.approx(np.array(BOX_A) / 0.5, abs=1e-3)
    assert scores[row] == pytest.approx(0.9 * 0.8, abs=1e-6)


def test_decode_simcc_min_of_maxima_and_missing():
    simcc_x = np.zeros((1, 3, 8), dtype=np.float32)
    simcc_y = np.zeros((1, 3, 10), dtype=np.float32)
    simcc_x[0, 0, 5], simcc_y[0, 0, 7] = 0.8, 0.6     # score 0.6 at (2.5, 3.5)
    simcc_x[0, 1, 2], simcc_y[0, 1, 9] = 0.3, 0.9     # score 0.3 at (1.0, 4.5)
    locs, scores = decode_simcc(simcc_x, simcc_y)      # keypoint 2: all zero -> score 0, location -1
    assert scores[0].tolist() == pytest.approx([0.6, 0.3, 0.0])
    assert locs[0].tolist() == [[2.5, 3.5], [1.0, 4.5], [-0.5, -0.5]]


def test_planted_models_decode_to_planted_keypoints(planted):
    width, height = 640, 480                          # letterbox ratio exactly 1
    pose = planted.detect_image(np.full((height, width, 3), 100, dtype=np.uint8))
    assert pose.person_detected and pose.num_people == 2
    assert pose.boxes == pytest.approx(np.array([BOX_A, BOX_C], dtype=np.float64), abs=1e-3)
    for person, box in enumerate([BOX_A, BOX_C]):
        points, scores = expected_body_and_all(box, width, height)
        assert pose.keypoints[person] == pytest.approx(points, abs=1e-6)
        assert pose.scores[person] == pytest.approx(scores, abs=1e-6)
    # spec §4.4 views of the same data
    assert pose.candidate.shape == (36, 2) and pose.candidate[18] == pytest.approx(pose.keypoints[1, 0])
    assert pose.subset[1, 0] == (18.0 if pose.scores[1, 0] > 0.3 else -1.0)
    assert (pose.subset[pose.body_score <= 0.3] == -1).all()
    assert pose.hands.shape == (4, 21, 2) and pose.hands[1] == pytest.approx(pose.keypoints[1, 92:113])
    assert pose.hands[2] == pytest.approx(pose.keypoints[0, 113:134])
    assert pose.faces.shape == (2, 68, 2) and pose.faces_score[0] == pytest.approx(pose.scores[0, 24:92])


def test_no_person_uses_the_whole_image(tmp_path):
    simcc_x, simcc_y, *_ = planted_peaks()
    det = save_model(planted_detector(np.zeros((8400, 85), dtype=np.float32)), tmp_path / "det.onnx")
    pose_path = save_model(planted_pose(simcc_x, simcc_y), tmp_path / "pose.onnx")
    pose = DWPoseDetector(det, pose_path).detect_image(np.full((300, 500, 3), 10, dtype=np.uint8))
    assert not pose.person_detected and pose.num_people == 1
    assert pose.boxes.tolist() == [[0.0, 0.0, 500.0, 300.0]]
    points, scores = expected_body_and_all((0, 0, 500, 300), 500, 300)
    assert pose.keypoints[0] == pytest.approx(points, abs=1e-6)
    assert pose.scores[0] == pytest.approx(scores, abs=1e-6)


def test_input_dependent_outputs_follow_each_batch_item(tmp_path):
    """Objectness = mean(letterboxed image)/255 and SimCC peaks + mean(crop)·gain, by hand."""
    raw = np.zeros((8400, 85), dtype=np.float32)
    gain = np.zeros((8400, 85), dtype=np.float32)
    row = anchor_index(32, 10, 7)
    raw[row, :4] = [0.25, 0.5, LN4, LN8]
    raw[row, 5] = 1.0
    gain[row, 4] = 1 / 255
    simcc_x, simcc_y, ix, iy, vx, vy = planted_peaks()
    gain_x = np.zeros_like(simcc_x)
    gain_x[np.arange(133), ix] = 0.1
    det = save_model(planted_detector(raw, gain), tmp_path / "det.onnx")
    pose_path = save_model(planted_pose(simcc_x, simcc_y, gain_x=gain_x), tmp_path / "pose.onnx")
    frames = [np.full((480, 640, 3), c, dtype=np.uint8) for c in (100, 40, 200)]
    poses = DWPoseDetector(det, pose_path).detect_frames(frames, batch_size=3)
    # letterbox rows 0..479 hold c, rows 480..639 hold 114: objectness (480c + 160·114)/640/255
    objectness = [(480 * c + 160 * 114) / 640 / 255 for c in (100, 40, 200)]
    assert [objectness[0] > 0.3, objectness[1] > 0.3, objectness[2] > 0.3] == [True, False, True]
    assert [p.person_detected for p in poses] == [True, False, True]
    for pose, c in zip(poses[::2], (100, 200)):
        # BOX_A's crop (x 208..448, y 80..400) lies inside the image: a uniform normalised crop
        crop_mean = np.mean(((c - POSE_MEAN) / POSE_STD).astype(np.float32))
        coco_scores = np.minimum(vx + np.float32(crop_mean) * np.float32(0.1), vy)
        coco_scores[list(ZERO_ROWS)] = 0.0
        # tolerance: onnxruntime's float32 ReduceMean over 331,776 values is good to ~1e-3 relative
        assert pose.scores[0, 18:] == pytest.approx(coco_scores[17:], abs=5e-4)
        assert pose.scores[0, 0] == pytest.approx(coco_scores[0], abs=5e-4)
