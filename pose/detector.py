"""``DWPoseDetector``: YOLOX-L person boxes + DWPose (RTMPose-l) whole-body keypoints on ONNX Runtime.

Spec §4.1-§4.4. Frames are RGB uint8 HWC arrays with no channel swap before the models.
Differences from the released wrapper (results are the same up to float rounding in batched
model runs):

* no module-level singleton; the device is an explicit argument (``'cpu'`` or ``'cuda[:N]'``).
  CUDA is used when onnxruntime offers it; otherwise (the CPU ``onnxruntime`` wheel beside a CUDA
  torch: ``--backend torch --device cuda``, or a CUDA provider that fails to start) DWPose runs on
  the CPU with one warning per process, since a job must not fail over its pose stage. That
  fallback is DWPose's alone: the main stages' sessions (``mimic.ort_session``) still refuse;
* each model is checked on load against its :mod:`mimic.spec` stage (``DWPOSE_DETECTOR``,
  ``DWPOSE_POSE``): a missing file, a non-ONNX file or wrong input/output shapes or names is a
  :class:`WeightsError` naming the file and the expectation;
* frames and person crops are batched. The released files fix the batch dimension at 1; the
  graph's input/output batch dim is rewritten to a symbolic ``batch`` and the rewrite is accepted
  only if a batch of two matches two batch-1 runs of the original graph; otherwise every item
  runs on its own (``OnnxModel.batching`` tells which);
* a model whose weights are random (the tiny preset's, marked in its ONNX metadata by
  :mod:`mimic.model.tiny_dwpose`) is recognised on load, whatever its path:
  ``DWPoseDetector.weights_warning`` holds the warning, which
  :func:`mimic.pose.extract.extract_video_poses` logs at the start of every extraction.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from mimic import ort_session
from mimic.errors import InputError, WeightsError
from mimic.model.tiny_dwpose import random_weights_warning
from mimic.ort_session import CPU_PROVIDER, CUDA_PROVIDER, INSTALL_ADVICE, providers_for
from mimic.spec import (DETECTOR_INPUT_SIZE, DWPOSE_DETECTOR, DWPOSE_POSE, POSE_INPUT_WH, StageName, StageSpec,
                        TensorSpec)
from .postprocess import (PoseFrame, assemble_pose_frame, decode_simcc, decode_yolox, person_boxes,
                          simcc_to_image, whole_image_box, yolox_anchor_grid)
from .preprocess import letterbox_batch, pose_crops

log = logging.getLogger(__name__)

# What each shipped model is, in error messages (the file name comes from the spec).
_ROLES = {StageName.DWPOSE_DETECTOR: "YOLOX-L person detector", StageName.DWPOSE_POSE: "DWPose whole-body model"}
_PRECISION = "fp32"  # the released DWPose graphs are fp32 only


def _static_shape(tensor: TensorSpec) -> tuple[int, ...]:
    """The full shape (batch 1 first) of a shipped model's tensor; DWPose specs are all static."""
    if not all(isinstance(d, int) for d in tensor.dims):
        raise ValueError(f"{tensor.name}: DWPose tensors have static shapes, got {tensor.dims}")
    return tuple(tensor.dims)


def _onnx_elem_type(tensor: TensorSpec) -> int:
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype(_PRECISION)))


def describe(spec: StageSpec) -> str:
    """What a model file for ``spec`` must look like, for error messages."""
    (tensor,) = spec.inputs
    outs = ", ".join(f"{t.name} {list(_static_shape(t))}" for t in spec.outputs)
    return f"the {_ROLES[spec.name]} ({spec.onnx_file}): input {tensor.dtype(_PRECISION)} {list(_static_shape(tensor))} -> {outs}"


_PARITY_RTOL = 1e-3


def select_providers(device: str) -> list:
    """onnxruntime providers for ``device`` ('cpu', 'cuda', 'cuda:N'): the one policy of
    ``mimic.ort_session`` (CUDA asked for and not available is an EngineError, never a CPU fallback;
    :class:`DWPoseDetector` asks :func:`dwpose_device` first)."""
    return providers_for(_checked(device))


def _checked(device: str) -> str:
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise InputError(f"bad device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    return device


class OnnxModel:
    """One signature-checked ONNX model on ONNX Runtime that runs whole batches.

    ``batching`` is ``'native'`` (graph batch dim already dynamic), ``'rewritten'`` (made
    dynamic here and verified) or ``'per-item'`` (batch-1 graph, items run one by one).
    ``weights_warning``: why its outputs mean nothing (random weights, from the file's metadata), else None.
    """

    def __init__(self, path: str | Path, spec: StageSpec, providers: list,
                 batching: bool = True) -> None:
        self.path = Path(path)
        self.spec = spec
        model = _load_checked(self.path, spec)
        self.weights_warning = random_weights_warning(model)
        graph_input = _graph_inputs(model)[0]
        self.input_name = graph_input.name
        names = [o.name for o in model.graph.output]
        self.output_names = list(spec.output_names if len(spec.outputs) > 1 else names)
        fixed_batch = graph_input.type.tensor_type.shape.dim[0].dim_value == 1
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._options, self._providers = options, providers
        samples = _verification_inputs(spec.inputs[0])
        try:
            self._session = self._session_from(model.SerializeToString())
            singles = [self._run_session(self._session, sample[None]) for sample in samples]
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise WeightsError(f"{self.path}: onnxruntime cannot run it ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''}); expected {describe(spec)}") from err
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
        if [o.shape for o in outputs] != [_static_shape(t) for t in self.spec.outputs]:
            raise WeightsError(f"{self.path}: produced outputs of shapes {[o.shape for o in outputs]}; "
                               f"expected {describe(self.spec)}")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs for an (N, C, H, W) float32 batch, each with leading dim N."""
        if self.batching != "per-item":
            return self._run_session(self._session, batch)
        runs = [self._run_session(self._session, item[None]) for item in batch]
        return [np.concatenate(parts) for parts in zip(*runs)]


def _load_checked(path: Path, spec: StageSpec) -> onnx.ModelProto:
    """Load ``path`` and check its declared signature against ``spec``, or raise :class:`WeightsError`.

    The input is matched by position (its name is read from the graph); outputs by name, except a
    single output (the detector's), which is matched by position."""
    expected = describe(spec)
    if not path.is_file():
        raise WeightsError(f"model file not found: {path} (expected {expected})")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # noqa: BLE001 - protobuf raises several types
        raise WeightsError(f"{path} is not an ONNX model ({type(err).__name__}); expected {expected}") from err
    inputs = _graph_inputs(model)
    if len(inputs) != len(spec.inputs) or not _shape_matches(inputs[0], spec.inputs[0]):
        found = ", ".join(f"{v.name} {_shape_text(v)}" for v in inputs) or "no inputs"
        raise WeightsError(f"{path} has inputs {found}; expected {expected}")
    outputs = {o.name: o for o in model.graph.output}
    if len(spec.outputs) == 1:
        ok = len(outputs) == 1 and _shape_matches(next(iter(outputs.values())), spec.outputs[0])
    else:
        ok = all(t.name in outputs and _shape_matches(outputs[t.name], t) for t in spec.outputs)
    if not ok:
        found = ", ".join(f"{name} {_shape_text(v)}" for name, v in outputs.items()) or "no outputs"
        raise WeightsError(f"{path} has outputs {found}; expected {expected}")
    return model


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old exports list weights as inputs)."""
    weights = {init.name for init in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in weights]


def _shape_matches(value: onnx.ValueInfoProto, want: TensorSpec) -> bool:
    """The spec's dtype and rank, batch dim 1 or symbolic, the other static dims equal to the spec's."""
    tensor = value.type.tensor_type
    dims = tensor.shape.dim
    trailing = _static_shape(want)[1:]
    if tensor.elem_type != _onnx_elem_type(want) or len(dims) != 1 + len(trailing):
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


def _verification_inputs(tensor: TensorSpec) -> np.ndarray:
    """Two different deterministic inputs in a plausible range (pixels 0-255 or normalised)."""
    rng = np.random.default_rng(0)
    input_chw = _static_shape(tensor)[1:]
    if tensor.kind == "det_pixels":
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


_warned_cpu_fallback = False


def _fall_back_to_cpu(device: str, why: str) -> str:
    """'cpu', after the one warning per process that DWPose leaves ``device`` (see the module docstring)."""
    global _warned_cpu_fallback
    if not _warned_cpu_fallback:
        _warned_cpu_fallback = True
        log.warning(f"DWPose runs on the CPU, not {device}: {why}; pose extraction is slower, nothing else changes. "
                    f"For DWPose on the GPU: {INSTALL_ADVICE}")
    return "cpu"


def dwpose_device(device: str) -> str:
    """The device DWPose runs on for ``device``: itself, or 'cpu' when onnxruntime has no CUDA provider."""
    if _checked(device).startswith("cuda") and not ort_session.cuda_available():
        return _fall_back_to_cpu(device, "this onnxruntime has no CUDA provider")
    return device


class DWPoseDetector:
    """YOLOX + DWPose on ONNX Runtime. ``frames_per_s`` reports the throughput so far; ``device`` is
    where it runs ('cpu' when CUDA was asked for and onnxruntime cannot give it); ``weights_warning``
    is set when either model has random weights (the tiny preset's): its poses are meaningless."""

    def __init__(self, det_model: str | Path, pose_model: str | Path, device: str = "cpu",
                 batching: bool = True) -> None:
        self.device = dwpose_device(device)
        providers = select_providers(self.device)
        self.detector = OnnxModel(det_model, DWPOSE_DETECTOR, providers, batching)
        if providers[0] != CPU_PROVIDER and self.detector.provider != CUDA_PROVIDER:
            self.device = _fall_back_to_cpu(device, "onnxruntime could not start its CUDA provider (CUDA/cuDNN libraries?)")
            providers = select_providers(self.device)
            self.detector = OnnxModel(det_model, DWPOSE_DETECTOR, providers, batching)
        self.pose_model = OnnxModel(pose_model, DWPOSE_POSE, providers, batching)
        self.weights_warning: str | None = self.detector.weights_warning or self.pose_model.weights_warning
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
