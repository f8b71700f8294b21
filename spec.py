"""One source of truth per stage: tensor names, dtypes, dynamic axes, shape presets, profiles,
tolerances, the default window and the DWPose signatures. Torch-free (it sits at the bottom of the
layers and the CLI reads it at start-up).

The runtime, the engine builder, the validators, the benchmarks and the exporter all import from
here; nothing else spells a stage or tensor name (``StageName`` / ``TensorName``). Shapes are
written with symbols:

* shape-point symbols (vary per call): ``B`` batch, ``F`` frames per window, ``N`` images (frames
  of a chunk), ``H``/``W`` pixel height/width (multiples of 64 for the UNet/VAE stages);
* model symbols (fixed per checkpoint, from :class:`ModelDims`): ``D`` CLIP/cross-attention width,
  ``C0`` PoseNet output width (= UNet ``block_out_channels[0]``), ``S`` CLIP image size, ``L`` latent
  channels.

A dim is an int, a symbol, ``"X/8"`` (pixel -> latent) or ``"X*Y"``. Profiles are given over the
shape-point symbols in *pixels*; every H/W bound is a multiple of 64, so every latent bound is a
multiple of 8 (the UNet's skip connections need that).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

from mimic.errors import InputError

PRECISIONS = ("fp32", "fp16")
Dim = int | str
ShapePoint = Mapping[str, int]
Shape = tuple[int, ...]

# dim_param names written into the ONNX graphs (readable in Netron / polygraphy inspect).
AXIS_NAMES = MappingProxyType(
    {"B": "batch", "F": "frames", "N": "images", "H": "height", "W": "width", "H/8": "latent_height", "W/8": "latent_width", "B*F": "batch_frames"}
)
POINT_SYMBOLS = ("B", "F", "N", "H", "W")
_TERM = re.compile(r"^([A-Za-z][A-Za-z0-9]*)(?:([*/])([A-Za-z0-9]+))?$")


@dataclass(frozen=True)
class ModelDims:
    """The checkpoint-dependent sizes the shapes need. Read from the weights' config files by the one
    strict reader, ``mimic.model.model_info.ModelInfo.dims`` (never guessed)."""

    embed_dim: int  # D: CLIP projection_dim == UNet cross_attention_dim (1024 for SVD-XT)
    pose_channels: int  # C0: UNet block_out_channels[0] (320)
    latent_channels: int = 4  # L
    clip_image_size: int = 224  # S
    cache_channels: int = 0  # C1: UNet block_out_channels[1], the width of the deep feature cached at depth 1 (0: not known)

    @property
    def profile_set(self) -> str:
        """``"real"`` for SVD-sized models, ``"tiny"`` for the tiny preset (small profiles, fast builds)."""
        return "real" if self.pose_channels >= 320 else "tiny"

    def symbols(self) -> dict[str, int]:
        return {"D": self.embed_dim, "C0": self.pose_channels, "L": self.latent_channels, "S": self.clip_image_size, "C1": self.cache_channels}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dims: tuple[Dim, ...]
    fp16_dtype: str = "float16"  # the dtype in the fp16 graph; every fp32 graph tensor is float32
    kind: str = "normal"  # how dummy values are drawn: normal | pixels | timestep | time_ids

    def dtype(self, precision: str) -> str:
        return self.fp16_dtype if precision == "fp16" else "float32"

    def shape(self, point: ShapePoint, dims: ModelDims) -> Shape:
        env = {**dims.symbols(), **point}
        return tuple(_eval_dim(d, env, self.name) for d in self.dims)

    def dynamic_axes(self) -> dict[int, str]:
        """Axes that vary with the shape point (model symbols are fixed per graph)."""
        return {i: AXIS_NAMES.get(d, d.replace("/", "_div").replace("*", "x")) for i, d in enumerate(self.dims) if isinstance(d, str) and _uses_point(d)}


@dataclass(frozen=True)
class DimRange:
    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"bad range {self}")


@dataclass(frozen=True)
class Tolerance:
    """Pass when ``max|onnx - torch| <= max_abs`` and ``max|onnx - torch| / max|torch| <= max_rel``."""

    max_abs: float
    max_rel: float


@dataclass(frozen=True)
class StageSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profiles: Mapping[str, Mapping[str, DimRange]]  # profile set ("real" | "tiny") -> ranges over point symbols
    export_point: ShapePoint  # the shape traced at export (small; distinct sizes so no axis is confused)
    validation_points: tuple[ShapePoint, ...]  # >= 2, all different from export_point
    tol_fp32: Tolerance
    tol_fp16: Tolerance | None  # None: no fp16 graph (the released DWPose models)
    exported: bool = True  # False: the model ships as ONNX (DWPose); the spec describes it for engine builds
    onnx_file: str | None = None  # released file name for shipped ONNX models
    description: str = ""
    window_axis: str | None = None  # the point symbol that is one window of frames (fixed in engine profiles)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @property
    def precisions(self) -> tuple[str, ...]:
        return PRECISIONS if self.tol_fp16 is not None else ("fp32",)

    def tensor(self, name: str) -> TensorSpec:
        for t in (*self.inputs, *self.outputs):
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no tensor {name!r}")

    def tolerance(self, precision: str) -> Tolerance:
        tol = self.tol_fp16 if precision == "fp16" else self.tol_fp32
        if tol is None:
            raise InputError(f"stage {self.name} has no {precision} graph")
        return tol

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: axes for t in (*self.inputs, *self.outputs) if (axes := t.dynamic_axes())}

    def input_shapes(self, point: ShapePoint, dims: ModelDims) -> dict[str, Shape]:
        return {t.name: t.shape(point, dims) for t in self.inputs}

    def output_shapes(self, point: ShapePoint, dims: ModelDims) -> dict[str, Shape]:
        return {t.name: t.shape(point, dims) for t in self.outputs}

    def profile_ranges(self, profile_set: str) -> Mapping[str, DimRange]:
        try:
            return self.profiles[profile_set]
        except KeyError:
            raise InputError(f"unknown profile set {profile_set!r} for stage {self.name}; known: {', '.join(self.profiles)}") from None


def _uses_point(expr: str) -> bool:
    return any(tok in POINT_SYMBOLS for tok in re.split(r"[*/]", expr))


def _eval_dim(d: Dim, env: Mapping[str, int], tensor: str) -> int:
    if isinstance(d, int):
        return d
    m = _TERM.match(d)
    if not m:
        raise ValueError(f"bad dim expression {d!r}")
    a, op, b = m.groups()
    try:
        x = env[a]
        if op is None:
            return int(x)
        y = int(b) if b.isdigit() else env[b]
    except KeyError as err:
        raise InputError(f"tensor {tensor}: shape point lacks {err.args[0]!r}") from None
    if op == "*":
        return int(x * y)
    if x % y:
        raise InputError(f"tensor {tensor}: {a}={x} is not a multiple of {y}")
    return int(x // y)


def engine_ranges(spec: StageSpec, profile_set: str, window: int | None = None, hw_sizes: Sequence[tuple[int, int]] = ()) -> dict[str, DimRange]:
    """The spec's ranges narrowed for one engine build: H/W to the requested (height, width) sizes
    (min/max over them, opt = the first) and the window axis (UNet frames, PoseNet images) fixed to
    ``window``. Measured with TensorRT-RTX 1.7 on the full-size UNet: a dynamic frame count *and*
    dynamic H/W in one profile fails the build (Myelin std::bad_alloc), so an engine serves one
    window length; each engine has exactly one optimization profile."""
    ranges = dict(spec.profile_ranges(profile_set))
    if hw_sizes:
        for axis, vals in (("H", [h for h, _ in hw_sizes]), ("W", [w for _, w in hw_sizes])):
            if axis in ranges:
                ranges[axis] = DimRange(min(vals), vals[0], max(vals))
    if window is not None and spec.window_axis in ranges:
        r = ranges[spec.window_axis]
        if not r.min <= window <= r.max:
            raise InputError(f"{spec.name}: a {window}-frame window is outside the supported {r.min}..{r.max} ({profile_set} profile set)")
        ranges[spec.window_axis] = DimRange(window, window, window)
    return ranges


def engine_profile(spec: StageSpec, dims: ModelDims, profile_set: str | None = None, window: int | None = None,
                   hw_sizes: Sequence[tuple[int, int]] = ()) -> dict[str, tuple[Shape, Shape, Shape]] | None:
    """The TensorRT optimization profile ``{input_name: (min_shape, opt_shape, max_shape)}`` of one
    engine; None for a fully static graph (DWPose), which needs none."""
    if not spec.dynamic_axes():
        return None
    ranges = engine_ranges(spec, profile_set or dims.profile_set, window, hw_sizes)
    pts = [{k: getattr(r, which) for k, r in ranges.items()} for which in ("min", "opt", "max")]
    return {t.name: tuple(t.shape(p, dims) for p in pts) for t in spec.inputs}


# ---------------------------------------------------------------------------------------- ranges
# Pixel ranges: real = up to 576x1024 in both orientations (so up to 1024 on each side) and smaller
# multiples of 64 down to 256; opt is the released portrait 1024x576. Tiny = the tiny preset's
# quick CPU sizes (resolution 192).
_REAL_HW = {"H": DimRange(256, 1024, 1024), "W": DimRange(256, 576, 1024)}
_TINY_HW = {"H": DimRange(64, 320, 512), "W": DimRange(64, 192, 512)}


def _sets(real: Mapping[str, DimRange], tiny: Mapping[str, DimRange]) -> Mapping[str, Mapping[str, DimRange]]:
    return MappingProxyType({"real": MappingProxyType(dict(real)), "tiny": MappingProxyType(dict(tiny))})


class StageName:
    """Every stage's name, spelled once."""

    IMAGE_ENCODER = "image_encoder"
    VAE_ENCODER = "vae_encoder"
    POSE_NET = "pose_net"
    UNET = "unet"
    UNET_FEATURES = "unet_features"  # deep-feature caching: the full UNet that also outputs the feature to cache
    UNET_SHALLOW = "unet_shallow"  # deep-feature caching: the UNet's outermost level around a cached feature
    VAE_DECODER = "vae_decoder"
    DWPOSE_DETECTOR = "dwpose_detector"
    DWPOSE_POSE = "dwpose_pose"


class TensorName:
    """Every graph input/output name, spelled once (the released DWPose files fix the last five)."""

    PIXEL_VALUES = "pixel_values"
    IMAGE_EMBEDS = "image_embeds"
    IMAGE = "image"
    LATENT_MEAN = "latent_mean"
    POSE_IMAGES = "pose_images"
    POSE_LATENTS = "pose_latents"
    SAMPLE = "sample"
    TIMESTEP = "timestep"
    ENCODER_HIDDEN_STATES = "encoder_hidden_states"
    ADDED_TIME_IDS = "added_time_ids"
    NOISE_PRED = "noise_pred"
    DEEP_FEATURES = "deep_features"
    CACHE_DEPTH = "cache_depth"  # a feed of the torch backend only (a Python int, not a graph input): the depth of a cached step
    LATENTS = "latents"
    FRAMES = "frames"
    DET_INPUT = "images"
    DET_OUTPUT = "output"
    POSE_INPUT = "input"
    SIMCC_X = "simcc_x"
    SIMCC_Y = "simcc_y"


# Deep-feature caching: the depth of the exported/engine graph pair (UNET_FEATURES, UNET_SHALLOW).
# The torch backend runs any depth 1 .. levels - 1; the graphs fix one, the outermost level alone
# (the feature entering the last up block, at the latent's full size: C1 channels).
GRAPH_CACHE_DEPTH = 1

# The released MimicMotion 1.1 window (upstream's misnamed ``num_frames``); 1.0 used 16.
DEFAULT_WINDOW = 72
# Engine builds: workspace cap (TensorRT #4360: the 72-frame MimicMotion UNet builds with an 8 GiB cap).
DEFAULT_WORKSPACE_GB = 8.0
RELEASED_WINDOWS = (72, 16)

# DWPose input geometry (released models): YOLOX letterbox side and the RTMPose crop (width, height).
DETECTOR_INPUT_SIZE = 640
POSE_INPUT_WH = (288, 384)
YOLOX_ANCHORS = 8400
YOLOX_CHANNELS = 85
COCO_WHOLEBODY_KEYPOINTS = 133
SIMCC_BINS_X = 2 * POSE_INPUT_WH[0]
SIMCC_BINS_Y = 2 * POSE_INPUT_WH[1]

N = TensorName
# Tolerances (see export/validate.py for the metrics). fp32: onnxruntime vs torch, same maths; measured
# <= 3.0e-6 abs on every stage of the tiny preset, bounded at 1e-4. fp16: onnxruntime-CPU running the
# fp16 graph vs the *fp32* torch model, measured on the tiny preset at the validation points below
# (worst over both points and three input seeds); each bound is ~3x its measured value. Real-weight
# fp16 errors are unmeasured (no weights on the CPU machines): `mimic export --validate` measures them.
IMAGE_ENCODER = StageSpec(
    name=StageName.IMAGE_ENCODER,
    description="CLIP vision tower + projection: normalised 224x224 pixels -> image_embeds",
    inputs=(TensorSpec(N.PIXEL_VALUES, ("B", 3, "S", "S")),),
    outputs=(TensorSpec(N.IMAGE_EMBEDS, ("B", "D")),),
    profiles=_sets({"B": DimRange(1, 1, 2)}, {"B": DimRange(1, 1, 2)}),
    export_point={"B": 2},
    validation_points=({"B": 1}, {"B": 3}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=Tolerance(3e-3, 1.5e-3),  # measured worst: abs 1.0e-3, rel 3.8e-4
)
VAE_ENCODER = StageSpec(
    name=StageName.VAE_ENCODER,
    description="VAE encoder: image in [-1, 1] -> posterior mean (unscaled)",
    inputs=(TensorSpec(N.IMAGE, ("B", 3, "H", "W"), kind="pixels"),),
    outputs=(TensorSpec(N.LATENT_MEAN, ("B", "L", "H/8", "W/8")),),
    profiles=_sets({"B": DimRange(1, 1, 2), **_REAL_HW}, {"B": DimRange(1, 1, 2), **_TINY_HW}),
    export_point={"B": 2, "H": 64, "W": 128},
    validation_points=({"B": 1, "H": 128, "W": 64}, {"B": 2, "H": 192, "W": 64}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=Tolerance(1.5e-3, 1.5e-3),  # measured worst: abs 3.7e-4, rel 5.0e-4
)
POSE_NET = StageSpec(
    name=StageName.POSE_NET,
    description="PoseNet: drawn pose images in [-1, 1] -> pose latents added after the UNet's conv_in",
    inputs=(TensorSpec(N.POSE_IMAGES, ("N", 3, "H", "W"), kind="pixels"),),
    outputs=(TensorSpec(N.POSE_LATENTS, ("N", "C0", "H/8", "W/8")),),
    profiles=_sets({"N": DimRange(1, 72, 72), **_REAL_HW}, {"N": DimRange(1, 16, 32), **_TINY_HW}),
    window_axis="N",
    export_point={"N": 3, "H": 64, "W": 128},
    validation_points=({"N": 1, "H": 128, "W": 64}, {"N": 5, "H": 192, "W": 64}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=Tolerance(3e-4, 1.5e-3),  # measured worst: abs 8.2e-5, rel 3.8e-4
)
UNET = StageSpec(
    name=StageName.UNET,
    description="MimicMotion UNet; CFG runs as batch 2 (the unconditional half gets zero pose latents)",
    inputs=(
        TensorSpec(N.SAMPLE, ("B", "F", 8, "H/8", "W/8")),
        TensorSpec(N.TIMESTEP, ("B",), fp16_dtype="float32", kind="timestep"),  # sinusoid input: fp32
        TensorSpec(N.ENCODER_HIDDEN_STATES, ("B", 1, "D")),
        TensorSpec(N.ADDED_TIME_IDS, ("B", 3), fp16_dtype="float32", kind="time_ids"),  # fp32 (127 * freq)
        TensorSpec(N.POSE_LATENTS, ("B*F", "C0", "H/8", "W/8")),
    ),
    outputs=(TensorSpec(N.NOISE_PRED, ("B", "F", 4, "H/8", "W/8")),),
    # Batch 1 (one branch) or 2 (CFG pair), dynamic size. F is the window: every engine fixes it to
    # one window length (see engine_ranges: F and H/W both dynamic does not build at full size).
    profiles=_sets({"B": DimRange(1, 2, 2), "F": DimRange(16, 72, 72), **_REAL_HW}, {"B": DimRange(1, 2, 2), "F": DimRange(1, 16, 32), **_TINY_HW}),
    window_axis="F",
    export_point={"B": 2, "F": 3, "H": 64, "W": 128},
    validation_points=({"B": 1, "F": 4, "H": 128, "W": 64}, {"B": 2, "F": 5, "H": 192, "W": 64}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=Tolerance(4e-3, 3e-3),  # measured worst: abs 1.2e-3, rel 9.3e-4 (1.4e-3 / 1.0e-3 without the fp32 norms);
    # full-size config with random fan-in-scaled weights: abs 2.9e-3, rel 1.5e-3
)
_UNET_INPUTS = UNET.inputs
_DEEP = TensorSpec(N.DEEP_FEATURES, ("B*F", "C1", "H/8", "W/8"))
UNET_FEATURES = StageSpec(
    name=StageName.UNET_FEATURES,
    description="Deep-feature caching, full step: the UNet (same noise_pred as unet) plus the feature entering its last up block",
    inputs=_UNET_INPUTS,
    outputs=(*UNET.outputs, _DEEP),
    profiles=UNET.profiles,
    window_axis="F",
    export_point=UNET.export_point,
    validation_points=UNET.validation_points,
    tol_fp32=UNET.tol_fp32,  # measured worst: abs 1.1e-6, rel 8.5e-7 (deep_features; noise_pred as unet's)
    tol_fp16=UNET.tol_fp16,  # measured worst: abs 1.4e-3, rel 1.1e-3 (deep_features); noise_pred abs 1.2e-3, rel 9.4e-4;
    # full-size config with diffusers' random init: deep_features abs 2.3e-3, rel 1.1e-3 (its abs error grows with its peak)
)
UNET_SHALLOW = StageSpec(
    name=StageName.UNET_SHALLOW,
    description="Deep-feature caching, cheap step: conv_in, the first down block, the last up block and the head around a cached feature",
    inputs=(*_UNET_INPUTS, _DEEP),
    outputs=UNET.outputs,
    profiles=UNET.profiles,
    window_axis="F",
    export_point=UNET.export_point,
    validation_points=UNET.validation_points,
    tol_fp32=UNET.tol_fp32,  # measured worst: abs 7.2e-7, rel 5.9e-7
    tol_fp16=UNET.tol_fp16,  # measured worst: abs 1.1e-3, rel 8.6e-4 (random deep_features, and the torch UNet's own features);
    # full-size config with diffusers' random init: abs 1.2e-3, rel 1.1e-3
)
VAE_DECODER = StageSpec(
    name=StageName.VAE_DECODER,
    description="Temporal VAE decoder over N frames (latents already divided by the scaling factor)",
    inputs=(TensorSpec(N.LATENTS, ("N", "L", "H/8", "W/8")),),
    outputs=(TensorSpec(N.FRAMES, ("N", 3, "H", "W")),),
    profiles=_sets({"N": DimRange(1, 8, 16), **_REAL_HW}, {"N": DimRange(1, 8, 16), **_TINY_HW}),
    export_point={"N": 3, "H": 64, "W": 128},
    validation_points=({"N": 4, "H": 128, "W": 64}, {"N": 6, "H": 192, "W": 64}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=Tolerance(1e-2, 7e-3),  # measured worst: abs 3.4e-3, rel 2.3e-3
)

# ------------------------------------------------------------------------------- DWPose (shipped)
# The released DWPose files are ONNX already: fixed batch-1 fp32 signatures, never re-exported; the
# specs describe them for engine builds and the DWPose loader checks the files against them.


def _static() -> Mapping[str, Mapping[str, DimRange]]:
    one: Mapping[str, DimRange] = MappingProxyType({})
    return MappingProxyType({"real": one, "tiny": one})


DWPOSE_DETECTOR = StageSpec(
    name=StageName.DWPOSE_DETECTOR,
    description="YOLOX-L person detector (released yolox_l.onnx): letterboxed 640x640 RGB 0..255",
    inputs=(TensorSpec(N.DET_INPUT, (1, 3, DETECTOR_INPUT_SIZE, DETECTOR_INPUT_SIZE), fp16_dtype="float32", kind="det_pixels"),),
    outputs=(TensorSpec(N.DET_OUTPUT, (1, YOLOX_ANCHORS, YOLOX_CHANNELS), fp16_dtype="float32"),),
    profiles=_static(),
    export_point={},
    validation_points=({}, {}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=None,
    exported=False,
    onnx_file="yolox_l.onnx",
)
DWPOSE_POSE = StageSpec(
    name=StageName.DWPOSE_POSE,
    description="RTMPose/DWPose whole-body model (released dw-ll_ucoco_384.onnx): 384x288 crop -> SimCC",
    inputs=(TensorSpec(N.POSE_INPUT, (1, 3, POSE_INPUT_WH[1], POSE_INPUT_WH[0]), fp16_dtype="float32"),),
    outputs=(
        TensorSpec(N.SIMCC_X, (1, COCO_WHOLEBODY_KEYPOINTS, SIMCC_BINS_X), fp16_dtype="float32"),
        TensorSpec(N.SIMCC_Y, (1, COCO_WHOLEBODY_KEYPOINTS, SIMCC_BINS_Y), fp16_dtype="float32"),
    ),
    profiles=_static(),
    export_point={},
    validation_points=({}, {}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=None,
    exported=False,
    onnx_file="dw-ll_ucoco_384.onnx",
)

# The stages exported from PyTorch (order = pipeline order).
STAGES: Mapping[str, StageSpec] = MappingProxyType(
    {s.name: s for s in (IMAGE_ENCODER, VAE_ENCODER, POSE_NET, UNET, UNET_FEATURES, UNET_SHALLOW, VAE_DECODER)})
# The stages a job with deep-feature caching needs besides the others (a job without runs none of them).
CACHE_STAGES: tuple[str, ...] = (StageName.UNET_FEATURES, StageName.UNET_SHALLOW)
DWPOSE_STAGES: Mapping[str, StageSpec] = MappingProxyType({s.name: s for s in (DWPOSE_DETECTOR, DWPOSE_POSE)})
ALL_STAGES: Mapping[str, StageSpec] = MappingProxyType({**STAGES, **DWPOSE_STAGES})
STAGE_NAMES: tuple[str, ...] = tuple(STAGES)


def get_stage(name: str) -> StageSpec:
    try:
        return ALL_STAGES[name]
    except KeyError:
        raise InputError(f"unknown stage {name!r}; known stages: {', '.join(ALL_STAGES)}") from None


def onnx_filename(stage: str, precision: str) -> str:
    """Where an exported graph lives inside an export folder: ``<precision>/<stage>.onnx``
    (external data, when used, is ``<precision>/<stage>.onnx.data``)."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return f"{precision}/{stage}.onnx"
