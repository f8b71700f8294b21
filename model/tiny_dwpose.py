"""Small synthetic ONNX models with the released DWPose signatures (tests, demos, CI).

Signatures (from :mod:`mimic.spec`'s ``DWPOSE_DETECTOR`` / ``DWPOSE_POSE``; batch dimension fixed
at 1, like the released files, so the dynamic-batch rewrite of :mod:`mimic.pose.detector` is
exercised):

* ``yolox_l.onnx``: input ``images`` float32 [1, 3, 640, 640] → output ``output`` [1, 8400, 85]
  (the names of YOLOX's own ONNX export; the loader does not depend on them).
* ``dw-ll_ucoco_384.onnx``: input ``input`` float32 [1, 3, 384, 288] → ``simcc_x`` [1, 133, 576]
  and ``simcc_y`` [1, 133, 768] (the mmdeploy RTMPose export names; the loader requires the two
  output names).

Two kinds:

* Planted-output models: the output is a planted array plus ``mean(input) · gain`` (per batch
  item), so tests know the exact raw output for any input. The planted arrays are stored sparsely
  (``ScatterND`` into zeros), which keeps the files tiny.
* :func:`write_tiny_dwpose`: a deterministic pair whose outputs follow the image. The detector
  finds bright blobs (pooled brightness, a local-maximum test on a smoothed map, one fixed-size
  box per blob at stride 32); the pose model adds a per-keypoint canonical standing-person prior
  to the crop's pooled brightness profiles, so keypoints land inside the detected box.

The tiny pair's poses mean nothing (a blob and a prior, with random gains), yet they look like
poses. So both files carry a marker in their ONNX metadata (``metadata_props``:
:data:`RANDOM_WEIGHTS_KEY` = :data:`RANDOM_WEIGHTS_WARNING`), which
:class:`mimic.pose.detector.DWPoseDetector` reads when it loads a file, whatever its path.
:func:`random_weights_warning` also recognises the files written before the marker existed
(producer ``mimic-tiny-dwpose``, graph ``tiny_yolox`` / ``tiny_rtmpose``: e.g. an older cache).
The planted-output models are not marked: tests choose their outputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mimic.spec import (COCO_WHOLEBODY_KEYPOINTS, DWPOSE_DETECTOR, DWPOSE_POSE, SIMCC_BINS_X, SIMCC_BINS_Y, YOLOX_CHANNELS,
                        TensorName)

DET_INPUT = TensorName.DET_INPUT
DET_OUTPUT = TensorName.DET_OUTPUT
POSE_INPUT = TensorName.POSE_INPUT
SIMCC_X_NAME, SIMCC_Y_NAME = TensorName.SIMCC_X, TensorName.SIMCC_Y
POSE_OUTPUTS = (SIMCC_X_NAME, SIMCC_Y_NAME)
DETECTOR_INPUT_SHAPE = tuple(DWPOSE_DETECTOR.tensor(DET_INPUT).dims)
DETECTOR_OUTPUT_SHAPE = tuple(DWPOSE_DETECTOR.tensor(DET_OUTPUT).dims)
POSE_INPUT_SHAPE = tuple(DWPOSE_POSE.tensor(POSE_INPUT).dims)
SIMCC_X_SHAPE = tuple(DWPOSE_POSE.tensor(SIMCC_X_NAME).dims)
SIMCC_Y_SHAPE = tuple(DWPOSE_POSE.tensor(SIMCC_Y_NAME).dims)
OPSET = 17
IR_VERSION = 8
PRODUCER = "mimic-tiny-dwpose"
TINY_GRAPH_NAMES = ("tiny_yolox", "tiny_rtmpose")
RANDOM_WEIGHTS_KEY = "mimic.random_weights"
RANDOM_WEIGHTS_WARNING = "the tiny preset's DWPose has random weights: poses are meaningless; use --weights or a pose file"


def mark_random_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Record in ``model``'s metadata that its weights are random (see the module docstring)."""
    entry = next((p for p in model.metadata_props if p.key == RANDOM_WEIGHTS_KEY), None) or model.metadata_props.add()
    entry.key, entry.value = RANDOM_WEIGHTS_KEY, RANDOM_WEIGHTS_WARNING
    return model


def random_weights_warning(model: onnx.ModelProto) -> str | None:
    """The warning to show for a model with random weights (marked, or a tiny DWPose file written
    before the marker existed), else None."""
    for prop in model.metadata_props:
        if prop.key == RANDOM_WEIGHTS_KEY:
            return prop.value or RANDOM_WEIGHTS_WARNING
    if model.producer_name == PRODUCER and model.graph.name in TINY_GRAPH_NAMES:
        return RANDOM_WEIGHTS_WARNING
    return None


class _GraphBuilder:
    """Accumulates nodes and initializers with generated unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, array: np.ndarray, hint: str = "const") -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
        return output

    def model(self, inputs: list[tuple[str, tuple[int, ...]]],
              outputs: list[tuple[str, tuple[int, ...]]], name: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs],
            initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name=PRODUCER, ir_version=IR_VERSION)
        onnx.checker.check_model(model)
        return model

    def sparse(self, dense: np.ndarray) -> str:
        """A (1, *dense.shape) float32 tensor rebuilt from the non-zero entries of ``dense``."""
        dense = np.asarray(dense, dtype=np.float32)[None]
        indices = np.argwhere(dense != 0).astype(np.int64)
        zeros = self.op("ConstantOfShape", [self.const(np.array(dense.shape, dtype=np.int64), "shape")],
                        value=numpy_helper.from_array(np.zeros(1, dtype=np.float32)))
        if len(indices) == 0:
            return zeros
        return self.op("ScatterND", [zeros, self.const(indices, "idx"), self.const(dense[dense != 0], "val")])

    def per_item_mean(self, image: str, batch_hostile: bool) -> str:
        """mean over (C, H, W) reshaped to (N, 1, 1); ``batch_hostile`` hard-codes N = 1."""
        mean = self.op("ReduceMean", [image], axes=[1, 2, 3], keepdims=1)
        shape = np.array([1 if batch_hostile else -1, 1, 1], dtype=np.int64)
        return self.op("Reshape", [mean, self.const(shape, "shape")])


def planted_detector(raw: np.ndarray, gain: np.ndarray | None = None,
                     batch_hostile: bool = False) -> onnx.ModelProto:
    """YOLOX-signature model: ``output[b] = raw + mean(images[b]) · gain``.

    ``raw`` and ``gain`` are (8400, 85). ``batch_hostile`` bakes batch 1 into an internal
    Reshape, so a batch-dynamic rewrite of this graph fails (to test the per-item fallback).
    """
    g = _GraphBuilder()
    mean = g.per_item_mean(DET_INPUT, batch_hostile)
    gain_t = g.sparse(np.zeros(DETECTOR_OUTPUT_SHAPE[1:]) if gain is None else gain)
    g.op("Add", [g.sparse(raw), g.op("Mul", [mean, gain_t])], DET_OUTPUT)
    return g.model([(DET_INPUT, DETECTOR_INPUT_SHAPE)],
                   [(DET_OUTPUT, DETECTOR_OUTPUT_SHAPE)], "planted_yolox")


def planted_pose(simcc_x: np.ndarray, simcc_y: np.ndarray, gain_x: np.ndarray | None = None,
                 gain_y: np.ndarray | None = None) -> onnx.ModelProto:
    """RTMPose-signature model: ``simcc_*[b] = planted + mean(input[b]) · gain_*``.

    ``simcc_x``/``gain_x`` are (133, 576), ``simcc_y``/``gain_y`` (133, 768).
    """
    g = _GraphBuilder()
    mean = g.per_item_mean(POSE_INPUT, batch_hostile=False)
    for name, planted, gain, shape in ((SIMCC_X_NAME, simcc_x, gain_x, SIMCC_X_SHAPE),
                                       (SIMCC_Y_NAME, simcc_y, gain_y, SIMCC_Y_SHAPE)):
        gain_t = g.sparse(np.zeros(shape[1:]) if gain is None else gain)
        g.op("Add", [g.sparse(planted), g.op("Mul", [mean, gain_t])], name)
    return g.model([(POSE_INPUT, POSE_INPUT_SHAPE)],
                   [(SIMCC_X_NAME, SIMCC_X_SHAPE), (SIMCC_Y_NAME, SIMCC_Y_SHAPE)], "planted_rtmpose")


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Serialise ``model`` to ``path`` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def write_tiny_dwpose(directory: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the deterministic tiny preset ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx``.

    Same seed → same bytes. Returns (detector path, pose model path).
    """
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    return (save_model(tiny_detector(rng), directory / DWPOSE_DETECTOR.onnx_file),
            save_model(tiny_pose_model(rng), directory / DWPOSE_POSE.onnx_file))


def tiny_detector(rng: np.random.Generator) -> onnx.ModelProto:
    """Blob detector with the YOLOX signature (see the module docstring)."""
    g = _GraphBuilder()
    levels = []
    for stride in (8, 16, 32):
        pooled = g.op("AveragePool", [DET_INPUT], kernel_shape=[stride, stride], strides=[stride, stride])
        weight = np.zeros((YOLOX_CHANNELS, 3, 1, 1), dtype=np.float32)
        weight[:4, :, 0, 0] = rng.normal(0.0, 1e-3, (4, 3))        # content-dependent box jitter
        bias = np.full(YOLOX_CHANNELS, -12.0, dtype=np.float32)                   # no object, no class
        bias[:4] = [0.5, 0.5, np.log(8.0), np.log(12.0)]              # centred 8×12-cell boxes
        head = g.op("Conv", [pooled, g.const(weight, "w"), g.const(bias, "b")])
        if stride == 32:
            head = g.op("Add", [head, _blob_objectness(g, pooled)])
        levels.append(g.op("Reshape", [head, g.const(np.array([0, YOLOX_CHANNELS, -1], dtype=np.int64), "shape")]))
    preds = g.op("Transpose", [g.op("Concat", levels, axis=2)], perm=[0, 2, 1])
    starts, ends, axes = (g.const(np.array([v], dtype=np.int64)) for v in (0, 4, 2))
    boxes = g.op("Slice", [preds, starts, ends, axes])
    probs = g.op("Sigmoid", [g.op("Slice", [preds, ends, g.const(np.array([YOLOX_CHANNELS], dtype=np.int64)), axes])])
    g.op("Concat", [boxes, probs], DET_OUTPUT, axis=2)
    return mark_random_weights(g.model([(DET_INPUT, DETECTOR_INPUT_SHAPE)],
                                       [(DET_OUTPUT, DETECTOR_OUTPUT_SHAPE)], "tiny_yolox"))


def _blob_objectness(g: _GraphBuilder, pooled: str) -> str:
    """(N, 85, 20, 20) logits added at stride 32: objectness and person class on bright blobs.

    objectness = (peak − 150)/10 + 4·(smooth − local max of smooth), where peak is the 3×3 max
    and smooth a Gaussian blur (σ = 3 cells) of the cell brightness: only the centre cell of a
    bright blob fires (a Gaussian blur of a blob has a single peak, a box blur a plateau).
    """
    brightness = g.op("Conv", [pooled, g.const(np.full((1, 3, 1, 1), 1 / 3, dtype=np.float32), "w")])
    peak = g.op("MaxPool", [brightness], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    taps = np.exp(-0.5 * (np.arange(-7, 8) / 3.0) ** 2)
    blur = np.outer(taps, taps) / np.outer(taps, taps).sum()
    smooth = g.op("Conv", [brightness, g.const(blur.astype(np.float32)[None, None], "blur")], pads=[7, 7, 7, 7])
    local_max = g.op("MaxPool", [smooth], kernel_shape=[9, 9], pads=[4, 4, 4, 4])
    features = g.op("Concat", [peak, smooth, local_max], axis=1)
    weight = np.zeros((YOLOX_CHANNELS, 3, 1, 1), dtype=np.float32)
    bias = np.zeros(YOLOX_CHANNELS, dtype=np.float32)
    weight[4, :, 0, 0] = [0.1, 4.0, -4.0]
    bias[4] = 12.0 - 15.0        # cancels the −12 base bias, then −150/10
    bias[5] = 12.0 + 4.0         # person probability ≈ 0.98
    return g.op("Conv", [features, g.const(weight, "w"), g.const(bias, "b")])


def tiny_pose_model(rng: np.random.Generator) -> onnx.ModelProto:
    """Prior + brightness-profile pose model with the RTMPose signature."""
    g = _GraphBuilder()
    gray = g.op("Conv", [POSE_INPUT, g.const(np.full((1, 3, 1, 1), 1 / 3, dtype=np.float32), "w")])
    pooled = g.op("AveragePool", [gray], kernel_shape=[8, 8], strides=[8, 8])           # (N, 1, 48, 36)
    gains = rng.uniform(0.5, 1.5, (COCO_WHOLEBODY_KEYPOINTS, 1, 1, 1)).astype(np.float32)
    features = g.op("Conv", [pooled, g.const(gains, "w")])                               # (N, 133, 48, 36)
    priors = _keypoint_priors(rng)
    for name, axis, cells, bins in ((SIMCC_X_NAME, 2, 36, SIMCC_BINS_X), (SIMCC_Y_NAME, 3, 48, SIMCC_BINS_Y)):
        profile = g.op("ReduceMax", [features], axes=[axis], keepdims=0)                 # (N, 133, cells)
        upsampled = g.op("MatMul", [profile, g.const(_upsampling_matrix(cells, bins), "up")])
        scaled = g.op("Mul", [upsampled, g.const(np.array(0.08, dtype=np.float32), "alpha")])
        centre = priors[:, 0 if name == SIMCC_X_NAME else 1] * bins
        g.op("Add", [scaled, g.const(_bumps(centre, priors[:, 2], bins)[None], "prior")], name)
    return mark_random_weights(g.model([(POSE_INPUT, POSE_INPUT_SHAPE)],
                                       [(SIMCC_X_NAME, SIMCC_X_SHAPE), (SIMCC_Y_NAME, SIMCC_Y_SHAPE)], "tiny_rtmpose"))


def _upsampling_matrix(cells: int, bins: int) -> np.ndarray:
    """(cells, bins) nearest-cell upsampling: bin j reads cell floor(j·cells/bins)."""
    matrix = np.zeros((cells, bins), dtype=np.float32)
    matrix[np.arange(bins) * cells // bins, np.arange(bins)] = 1.0
    return matrix


def _bumps(centres: np.ndarray, heights: np.ndarray, bins: int, sigma: float = 8.0) -> np.ndarray:
    """(K, bins) Gaussian bumps of the given heights at the given (bin) centres."""
    grid = np.arange(bins, dtype=np.float64)[None, :]
    return (heights[:, None] * np.exp(-0.5 * ((grid - centres[:, None]) / sigma) ** 2)).astype(np.float32)


# A standing person facing the camera, in crop coordinates (x, y ∈ [0, 1]) — COCO-17 order.
_BODY_LAYOUT = ((0.50, 0.20), (0.53, 0.18), (0.47, 0.18), (0.56, 0.19), (0.44, 0.19), (0.61, 0.30),
                (0.39, 0.30), (0.66, 0.43), (0.34, 0.43), (0.68, 0.55), (0.32, 0.55), (0.56, 0.56),
                (0.44, 0.56), (0.57, 0.71), (0.43, 0.71), (0.57, 0.86), (0.43, 0.86))
_FEET_LAYOUT = ((0.58, 0.89), (0.60, 0.88), (0.56, 0.87), (0.42, 0.89), (0.40, 0.88), (0.44, 0.87))


def _keypoint_priors(rng: np.random.Generator) -> np.ndarray:
    """(133, 3): canonical x, y (crop fractions, slightly jittered) and prior height per keypoint."""
    angles = np.linspace(0.0, 2 * np.pi, 68, endpoint=False)
    face = np.stack([0.50 + 0.045 * np.cos(angles), 0.20 + 0.05 * np.sin(angles)], axis=1)
    hands = [_hand_layout(wrist) for wrist in (_BODY_LAYOUT[9], _BODY_LAYOUT[10])]
    layout = np.concatenate([_BODY_LAYOUT, _FEET_LAYOUT, face, *hands])
    layout = layout + rng.normal(0.0, 0.004, layout.shape)
    heights = np.concatenate([rng.uniform(0.55, 0.95, 23), rng.uniform(0.35, 0.8, 110)])
    return np.concatenate([layout, heights[:, None]], axis=1)


def _hand_layout(wrist: tuple[float, float]) -> np.ndarray:
    """21 hand points: the wrist, then 5 fingers of 4 joints fanning downwards."""
    points = [wrist]
    for finger in range(5):
        direction = np.deg2rad(60 + 15 * finger)
        for joint in range(1, 5):
            points.append((wrist[0] + 0.012 * joint * np.cos(direction), wrist[1] + 0.014 * joint * np.sin(direction)))
    return np.array(points)
