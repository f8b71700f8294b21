"""``DWPoseDetector``: YOLOX-L person boxes + DWPose (RTMPose-l) whole-body keypoints on ONNX Runtime.

Spec §4.1-§4.4. Frames are RGB uint8 HWC arrays with no channel swap before the models.
Differences from the released wrapper (results are the same up to float rounding in batched
model runs):

* no module-level singleton; the device is an explicit argument (``'cpu'`` or ``'cuda[:N]'``;
  CUDA is used when onnxruntime offers it, otherwise CPU with a logged warning);
* each model's signature is checked on load (a missing file, a non-ONNX file or wrong
  input/output shapes or names is a :class:`WeightsError` naming the file and the expectation);
* frames and person crops are batched. The released files fix the batch dimension at 1; the
  graph's input/output batch dim is rewritten to a symbolic ``batch`` and the rewrite is accepted
  only if a batch of two matches two batch-1 runs of the original graph; otherwise every item
  runs on its own (``OnnxModel.batching`` tells which).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from mimic.errors import InputError, WeightsError
from .postprocess import (PoseFrame, assemble_pose_frame, decode_simcc, decode_yolox, person_boxes,
                          simcc_to_image, whole_image_box, yolox_anchor_grid)
from .preprocess import DETECTOR_INPUT_SIZE, POSE_INPUT_WH, letterbox_batch, pose_crops


@dataclass(frozen=True)
class OnnxSignature:
    """What a model file must look like: one float32 NCHW input and named/shaped outputs.

    ``output_names`` None means a single output of any name. Shapes exclude the batch dim.
    """

    role: str
    input_chw: tuple[int, int, int]
    output_shapes: tuple[tuple[int, int], ...]
    output_names: tuple[str, ...] | None = None

    def describe(self) -> str:
        outs = ", ".join(f"{name or 'output'} [1, {', '.join(map(str, shape))}]"
                         for name, shape in zip(self.output_names or (None,), self.output_shapes))
        return f"the {self.role}: input float32 [1, {', '.join(map(str, self.input_chw))}] -> {outs}"


DETECTOR_SIGNATURE = OnnxSignature("YOLOX-L person detector (yolox_l.onnx)",
                                   (3, DETECTOR_INPUT_SIZE, DETECTOR_INPUT_SIZE), ((8400, 85),))
POSE_SIGNATURE = OnnxSignature("DWPose whole-body model (dw-ll_ucoco_384.onnx)",
                               (3, POSE_INPUT_WH[1], POSE_INPUT_WH[0]), ((133, 576), (133, 768)),
                               ("simcc_x", "simcc_y"))
_PARITY_RTOL = 1e-3
_CUDA = "CUDAExecutionProvider"


def select_providers(device: str) -> tuple[list, str | None]:
    """onnxruntime providers for ``device`` ('cpu', 'cuda', 'cuda:N') and a warning if downgraded."""
    if device == "cpu":
        return ["CPUExecutionProvider"], None
    if device == "cuda" or device.startswith("cuda:"):
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise InputError(f"bad device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
        if _CUDA in ort.get_available_providers():
            return [(_CUDA, {"device_id": int(index)}), "CPUExecutionProvider"], None
        return ["CPUExecutionProvider"], (f"device {device!r} requested but onnxruntime has no CUDA provider "
                                          "(install onnxruntime-gpu); DWPose runs on the CPU")
    raise InputError(f"bad device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")


class OnnxModel:
    """One signature-checked ONNX model on ONNX Runtime that runs whole batches.

    ``batching`` is ``'native'`` (graph batch dim already dynamic), ``'rewritten'`` (made
    dynamic here and verified) or ``'per-item'`` (batch-1 graph, items run one by one).
    """

    def __init__(self, path: str | Path, signature: OnnxSignature, providers: list,
                 batching: bool = True) -> None:
        self.path = Path(path)
        self.signature = signature
        model = _load_checked(self.path, signature)
        graph_input = _graph_inputs(model)[0]
        self.input_name = graph_input.name
        names = [o.name for o in model.graph.output]
        self.output_names = list(signature.output_names or names)
        fixed_batch = graph_input.type.tensor_type.shape.dim[0].dim_value == 1
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._options, self._providers = options, providers
        samples = _verification_inputs(signature.input_chw)
        try:
            self._session = self._session_from(model.SerializeToString())
            singles = [self._run_session(self._session, sample[None]) for sample in samples]
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise WeightsError(f"{self.path}: onnxruntime cannot run it ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''}); expected {signature.describe()}") from err
        self._check_output_shapes(singles[0])
        self.batching, self.batching_note = "per-item", "batching disabled"
        if batching:
            self._enable_batching(model, fixed_batch, samples, singles)
        self.provider = self._session.get_providers()[0]

    def _enable_batching(self, model: onnx.ModelProto, fixed_batch: bool, samples: np.ndarray,
                         singles: list[list[np.ndarray]]) -> None:
        """Switch to a batch-dynamic session if one reproduces the batch-1 outputs."""
        session = self._session
        if fixed_batch:
            _make_batch_dynamic(model)
            try:
                session = self._session_from(model.SerializeToString())
            except Exception as err:  # noqa: BLE001 - any load failure means "no batching"
                self.batching_note = f"dynamic-batch graph did not load ({type(err).__name__})"
                return
        problem = _batch_parity(session, self._run_session, samples, singles)
        if problem:
            self.batching_note = problem
            return
        self._session = session
        self.batching = "rewritten" if fixed_batch else "native"
        self.batching_note = ""

    def _session_from(self, data: bytes) -> ort.InferenceSession:
        return ort.InferenceSession(data, sess_options=self._options, providers=self._providers)

    def _run_session(self, session: ort.InferenceSession, batch: np.ndarray,
                     options: ort.RunOptions | None = None) -> list[np.ndarray]:
        return session.run(self.output_names, {self.input_name: batch}, options)

    def _check_output_shapes(self, outputs: list[np.ndarray]) -> None:
        shapes = [tuple(o.shape[1:]) for o in outputs]
        if shapes != list(self.signature.output_shapes) or any(o.shape[0] != 1 for o in outputs):
            raise WeightsError(f"{self.path}: produced outputs of shapes {[o.shape for o in outputs]}; "
                               f"expected {self.signature.describe()}")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs for an (N, C, H, W) float32 batch, each with leading dim N."""
        if self.batching != "per-item":
            return self._run_session(self._session, batch)
        runs = [self._run_session(self._session, item[None]) for item in batch]
        return [np.concatenate(parts) for parts in zip(*runs)]


def _load_checked(path: Path, signature: OnnxSignature) -> onnx.ModelProto:
    """Load ``path`` and check its declared signature, or raise :class:`WeightsError`."""
    expected = signature.describe()
    if not path.is_file():
        raise WeightsError(f"model file not found: {path} (expected {expected})")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # noqa: BLE001 - protobuf raises several types
        raise WeightsError(f"{path} is not an ONNX model ({type(err).__name__}); expected {expected}") from err
    inputs = _graph_inputs(model)
    if len(inputs) != 1 or not _shape_matches(inputs[0], signature.input_chw):
        found = ", ".join(f"{v.name} {_shape_text(v)}" for v in inputs) or "no inputs"
        raise WeightsError(f"{path} has inputs {found}; expected {expected}")
    outputs = {o.name: o for o in model.graph.output}
    if signature.output_names is None:
        ok = len(outputs) == 1 and _shape_matches(next(iter(outputs.values())), signature.output_shapes[0])
    else:
        ok = all(name in outputs and _shape_matches(outputs[name], shape)
                 for name, shape in zip(signature.output_names, signature.output_shapes))
    if not ok:
        found = ", ".join(f"{name} {_shape_text(v)}" for name, v in outputs.items()) or "no outputs"
        raise WeightsError(f"{path} has outputs {found}; expected {expected}")
    return model


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old exports list weights as inputs)."""
    weights = {init.name for init in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in weights]


def _shape_matches(value: onnx.ValueInfoProto, trailing: tuple[int, ...]) -> bool:
    """float32, rank 1 + len(trailing), batch dim 1 or symbolic, static dims equal to ``trailing``."""
    tensor = value.type.tensor_type
    dims = tensor.shape.dim
    if tensor.elem_type != onnx.TensorProto.FLOAT or len(dims) != 1 + len(trailing):
        return False
    if dims[0].HasField("dim_value") and dims[0].dim_value != 1:
        return False
    return all(not d.HasField("dim_value") or d.dim_value == want for d, want in zip(dims[1:], trailing))


def _shape_text(value: onnx.ValueInfoProto) -> str:
    dims = value.type.tensor_type.shape.dim
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + "]"


def _make_batch_dynamic(model: onnx.ModelProto) -> None:
    """Rewrite the batch dim of the graph input and outputs to ``batch``; drop stale inner shapes."""
    for value in [*_graph_inputs(model), *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]


def _verification_inputs(input_chw: tuple[int, int, int]) -> np.ndarray:
    """Two different deterministic inputs in a plausible range (pixels 0-255 or normalised)."""
    rng = np.random.default_rng(0)
    if input_chw[1] == DETECTOR_INPUT_SIZE:
        return rng.uniform(0.0, 255.0, (2, *input_chw)).astype(np.float32)
    return rng.normal(0.0, 1.0, (2, *input_chw)).astype(np.float32)


def _batch_parity(session: ort.InferenceSession, run: Callable, samples: np.ndarray,
                  singles: list[list[np.ndarray]]) -> str:
    """'' if a batch of ``samples`` reproduces the batch-1 ``singles``, else why not."""
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4          # a failing trial run is expected, not worth a log line
    try:
        batched = run(session, samples, quiet)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        return f"batch of 2 failed to run ({type(err).__name__})"
    for index, single in enumerate(singles):
        for got, want in zip(batched, single):
            tolerance = _PARITY_RTOL * max(1.0, float(np.abs(want).max()))
            if got.shape[0] != len(samples) or not np.allclose(got[index], want[0], rtol=_PARITY_RTOL, atol=tolerance):
                return "batched outputs differ from batch-1 outputs"
    return ""


class DWPoseDetector:
    """YOLOX + DWPose on ONNX Runtime. ``frames_per_s`` reports the throughput so far."""

    def __init__(self, det_model: str | Path, pose_model: str | Path, device: str = "cpu",
                 batching: bool = True, log: Callable[[str], None] | None = None) -> None:
        providers, warning = select_providers(device)
        self.detector = OnnxModel(det_model, DETECTOR_SIGNATURE, providers, batching)
        self.pose_model = OnnxModel(pose_model, POSE_SIGNATURE, providers, batching)
        if not warning and providers[0] != "CPUExecutionProvider" and self.detector.provider != _CUDA:
            warning = f"device {device!r} requested but onnxruntime could not start CUDA; DWPose runs on the CPU"
        if warning and log:
            log(warning)
        self._grid, self._strides = yolox_anchor_grid(DETECTOR_INPUT_SIZE)
        self.frames_done = 0
        self.seconds = 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames_done / self.seconds if self.seconds > 0 else 0.0

    def detect_image(self, image: np.ndarray) -> PoseFrame:
        """Pose of one RGB uint8 (H, W, 3) image."""
        return self._detect_batch([image], batch_size=1)[0]

    def detect_frames(self, frames: Iterable[np.ndarray], batch_size: int = 8) -> list[PoseFrame]:
        """Poses of a stream of RGB frames, ``batch_size`` frames (and crops) per model call."""
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        poses: list[PoseFrame] = []
        for chunk in _chunks(iter(frames), batch_size):
            poses.extend(self._detect_batch(chunk, batch_size))
        return poses

    def _detect_batch(self, images: list[np.ndarray], batch_size: int) -> list[PoseFrame]:
        for image in images:
            if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                    and image.shape[2] == 3 and min(image.shape[:2]) > 0):
                raise InputError(f"expected an RGB uint8 image of shape (H, W, 3), got "
                                 f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
        start = time.perf_counter()
        inputs, ratios = letterbox_batch(images)
        raw = self.detector.run(inputs)[0]
        frame_boxes, detected = [], []
        for image, prediction, ratio in zip(images, raw, ratios):
            boxes, scores = decode_yolox(prediction, ratio, self._grid, self._strides)
            people = person_boxes(boxes, scores)
            detected.append(len(people) > 0)
            frame_boxes.append(people if len(people) else whole_image_box(*image.shape[:2]))
        crops = [pose_crops(image, boxes) for image, boxes in zip(images, frame_boxes)]
        inputs = np.concatenate([c[0] for c in crops])
        outputs = [self.pose_model.run(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
        locs, scores = decode_simcc(np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs]))
        keypoints = simcc_to_image(locs, np.concatenate([c[1] for c in crops]),
                                   np.concatenate([c[2] for c in crops]), POSE_INPUT_WH)
        poses, first = [], 0
        for image, boxes, found in zip(images, frame_boxes, detected):
            last = first + len(boxes)
            poses.append(assemble_pose_frame(keypoints[first:last], scores[first:last], boxes, found,
                                             image.shape[:2]))
            first = last
        self.frames_done += len(images)
        self.seconds += time.perf_counter() - start
        return poses


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while chunk := list(islice(items, size)):
        yield chunk
