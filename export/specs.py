"""One source of truth per stage: tensor names, dtypes, dynamic axes, dummy inputs, profiles, tolerances.

The runtime, the engine builder and the exporter all import from here; nothing else hard-codes a
tensor name. Shapes are written with symbols:

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
from typing import Mapping

import torch

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
    """The checkpoint-dependent sizes the shapes need (read from the config files, never guessed)."""

    embed_dim: int  # D: CLIP projection_dim == UNet cross_attention_dim (1024 for SVD-XT)
    pose_channels: int  # C0: UNet block_out_channels[0] (320)
    latent_channels: int = 4  # L
    clip_image_size: int = 224  # S

    @property
    def profile_set(self) -> str:
        """``"real"`` for SVD-sized models, ``"tiny"`` for the tiny preset (small profiles, fast builds)."""
        return "real" if self.pose_channels >= 320 else "tiny"

    def symbols(self) -> dict[str, int]:
        return {"D": self.embed_dim, "C0": self.pose_channels, "L": self.latent_channels, "S": self.clip_image_size}

    @classmethod
    def from_configs(cls, unet: Mapping | None = None, vae: Mapping | None = None, clip: Mapping | None = None) -> "ModelDims":
        """From the diffusers/transformers config dicts (any may be missing when its stage is unused)."""
        embed = (unet or {}).get("cross_attention_dim") or (clip or {}).get("projection_dim") or 1024
        pose = ((unet or {}).get("block_out_channels") or [320])[0]
        return cls(
            embed_dim=int(embed),
            pose_channels=int(pose),
            latent_channels=int((vae or {}).get("latent_channels", 4)),
            clip_image_size=int((clip or {}).get("image_size", 224)),
        )

    @classmethod
    def from_svd_dir(cls, svd_dir: Path) -> "ModelDims":
        import json

        def cfg(sub: str) -> dict | None:
            p = Path(svd_dir) / sub / "config.json"
            return json.loads(p.read_text()) if p.is_file() else None

        return cls.from_configs(cfg("unet"), cfg("vae"), cfg("image_encoder"))

    @classmethod
    def from_module(cls, stage: str, module: torch.nn.Module) -> "ModelDims":
        """Best effort from one stage's module (a raw model or an export wrapper)."""
        module = getattr(module, "model", module)
        cfg = getattr(module, "config", None)
        get = (lambda k, d=None: cfg.get(k, d) if isinstance(cfg, Mapping) else getattr(cfg, k, d)) if cfg is not None else (lambda k, d=None: d)
        if stage == "unet":
            return cls(embed_dim=int(get("cross_attention_dim")), pose_channels=int(get("block_out_channels")[0]))
        if stage == "pose_net":
            return cls(embed_dim=1024, pose_channels=int(module.final_proj.out_channels))
        if stage in ("vae_encoder", "vae_decoder"):
            return cls(embed_dim=1024, pose_channels=320, latent_channels=int(get("latent_channels", 4)))
        if stage == "image_encoder":
            return cls(embed_dim=int(get("projection_dim")), pose_channels=320, clip_image_size=int(get("image_size", 224)))
        return cls(embed_dim=1024, pose_channels=320)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dims: tuple[Dim, ...]
    fp16_dtype: str = "float16"  # the dtype in the fp16 graph; every fp32 graph tensor is float32
    kind: str = "normal"  # how dummy values are drawn: normal | pixels | timestep | time_ids

    def dtype(self, precision: str) -> str:
        return self.fp16_dtype if precision == "fp16" else "float32"

    def torch_dtype(self, precision: str) -> torch.dtype:
        return getattr(torch, self.dtype(precision))

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
    profiles: Mapping[str, tuple[Mapping[str, DimRange], ...]]  # profile set -> profiles over point symbols
    export_point: ShapePoint  # the shape traced at export (small; distinct sizes so no axis is confused)
    validation_points: tuple[ShapePoint, ...]  # >= 2, all different from export_point
    tol_fp32: Tolerance
    tol_fp16: Tolerance | None  # None: no fp16 graph (the released DWPose models)
    exported: bool = True  # False: the model ships as ONNX (DWPose); the spec describes it for engine builds
    onnx_file: str | None = None  # released file name for shipped ONNX models
    description: str = ""

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

    def dummy_inputs(self, point: ShapePoint, dims: ModelDims, precision: str = "fp32", seed: int = 0, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Deterministic, realistically-ranged inputs in the graph's dtypes (meta device allowed)."""
        gen = torch.Generator().manual_seed(seed)
        out = {}
        for t in self.inputs:
            x = _draw(t.kind, t.shape(point, dims), gen)
            out[t.name] = x.to(device=device, dtype=t.torch_dtype(precision))
        return out

    def profile_points(self, profile_set: str) -> tuple[Mapping[str, DimRange], ...]:
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


def _draw(kind: str, shape: Shape, gen: torch.Generator) -> torch.Tensor:
    if kind == "pixels":  # images in [-1, 1]
        return torch.rand(shape, generator=gen) * 2 - 1
    if kind == "timestep":  # c_noise = 0.25 ln(sigma), sigma in [0.002, 700]
        return torch.rand(shape, generator=gen) * 3.2 - 1.55
    if kind == "time_ids":  # [fps - 1, motion bucket id, noise augmentation]
        lo, hi = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([29.0, 255.0, 0.1])
        return lo + torch.rand(shape, generator=gen) * (hi - lo)
    if kind == "det_pixels":  # DWPose detector: raw 0..255
        return torch.rand(shape, generator=gen) * 255
    return torch.randn(shape, generator=gen)


def profiles_for(spec: StageSpec, dims: ModelDims, profile_set: str | None = None) -> list[dict[str, tuple[Shape, Shape, Shape]]]:
    """TensorRT optimization profiles: ``[{input_name: (min_shape, opt_shape, max_shape)}]``."""
    if not spec.dynamic_axes():  # fully static graph (DWPose): TensorRT needs no profile
        return []
    result = []
    for ranges in spec.profile_points(profile_set or dims.profile_set):
        pts = [{k: getattr(r, which) for k, r in ranges.items()} for which in ("min", "opt", "max")]
        result.append({t.name: tuple(t.shape(p, dims) for p in pts) for t in spec.inputs})
    return result


def profile_index_for(profiles: list[dict[str, tuple[Shape, Shape, Shape]]], shapes: Mapping[str, Shape]) -> int:
    """Index of the first profile whose [min, max] ranges hold every given input shape."""
    for i, prof in enumerate(profiles):
        if all(
            name in prof and len(shape) == len(prof[name][0]) and all(lo <= d <= hi for d, lo, hi in zip(shape, prof[name][0], prof[name][2]))
            for name, shape in shapes.items()
        ):
            return i
    raise InputError(f"no optimization profile holds the input shapes {dict(shapes)}")


# ---------------------------------------------------------------------------------------- ranges
# Pixel ranges: real = up to 576x1024 in both orientations (so up to 1024 on each side) and smaller
# multiples of 64 down to 256; opt is the released portrait 1024x576. Tiny = the tiny preset's
# quick CPU sizes (resolution 192).
_REAL_HW = {"H": DimRange(256, 1024, 1024), "W": DimRange(256, 576, 1024)}
_TINY_HW = {"H": DimRange(64, 320, 512), "W": DimRange(64, 192, 512)}


def _sets(real: Mapping[str, DimRange], tiny: Mapping[str, DimRange]) -> Mapping[str, tuple[Mapping[str, DimRange], ...]]:
    return MappingProxyType({"real": (MappingProxyType(dict(real)),), "tiny": (MappingProxyType(dict(tiny)),)})


# Tolerances (see export/validate.py for the metrics). fp32: onnxruntime vs torch, same maths; measured
# <= 3.0e-6 abs on every stage of the tiny preset, bounded at 1e-4. fp16: onnxruntime-CPU running the
# fp16 graph vs the *fp32* torch model, measured on the tiny preset at the validation points below
# (worst over both points and three input seeds); each bound is ~3x its measured value. Real-weight
# fp16 errors are unmeasured (no weights on the CPU machines): `mimic export --validate` measures them.
IMAGE_ENCODER = StageSpec(
    name="image_encoder",
    description="CLIP vision tower + projection: normalised 224x224 pixels -> image_embeds",
    inputs=(TensorSpec("pixel_values", ("B", 3, "S", "S")),),
    outputs=(TensorSpec("image_embeds", ("B", "D")),),
    profiles=_sets({"B": DimRange(1, 1, 2)}, {"B": DimRange(1, 1, 2)}),
    export_point={"B": 2},
    validation_points=({"B": 1}, {"B": 3}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=Tolerance(3e-3, 1.5e-3),  # measured worst: abs 1.0e-3, rel 3.8e-4
)
VAE_ENCODER = StageSpec(
    name="vae_encoder",
    description="VAE encoder: image in [-1, 1] -> posterior mean (unscaled)",
    inputs=(TensorSpec("image", ("B", 3, "H", "W"), kind="pixels"),),
    outputs=(TensorSpec("latent_mean", ("B", "L", "H/8", "W/8")),),
    profiles=_sets({"B": DimRange(1, 1, 2), **_REAL_HW}, {"B": DimRange(1, 1, 2), **_TINY_HW}),
    export_point={"B": 2, "H": 64, "W": 128},
    validation_points=({"B": 1, "H": 128, "W": 64}, {"B": 2, "H": 192, "W": 64}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=Tolerance(1.5e-3, 1.5e-3),  # measured worst: abs 3.7e-4, rel 5.0e-4
)
POSE_NET = StageSpec(
    name="pose_net",
    description="PoseNet: drawn pose images in [-1, 1] -> pose latents added after the UNet's conv_in",
    inputs=(TensorSpec("pose_images", ("N", 3, "H", "W"), kind="pixels"),),
    outputs=(TensorSpec("pose_latents", ("N", "C0", "H/8", "W/8")),),
    profiles=_sets({"N": DimRange(1, 72, 72), **_REAL_HW}, {"N": DimRange(1, 16, 32), **_TINY_HW}),
    export_point={"N": 3, "H": 64, "W": 128},
    validation_points=({"N": 1, "H": 128, "W": 64}, {"N": 5, "H": 192, "W": 64}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=Tolerance(3e-4, 1.5e-3),  # measured worst: abs 8.2e-5, rel 3.8e-4
)
UNET = StageSpec(
    name="unet",
    description="MimicMotion UNet; CFG runs as batch 2 (the unconditional half gets zero pose latents)",
    inputs=(
        TensorSpec("sample", ("B", "F", 8, "H/8", "W/8")),
        TensorSpec("timestep", ("B",), fp16_dtype="float32", kind="timestep"),  # sinusoid input: fp32
        TensorSpec("encoder_hidden_states", ("B", 1, "D")),
        TensorSpec("added_time_ids", ("B", 3), fp16_dtype="float32", kind="time_ids"),  # fp32 (127 * freq)
        TensorSpec("pose_latents", ("B*F", "C0", "H/8", "W/8")),
    ),
    outputs=(TensorSpec("noise_pred", ("B", "F", 4, "H/8", "W/8")),),
    # Batch 1 (one branch) or 2 (CFG pair). Real: one profile per released window length (72 frames
    # for 1.1 first, 16 for 1.0) with dynamic batch and size. Measured with TensorRT-RTX 1.7 on the
    # full-size UNet: a dynamic frame count *and* dynamic H/W in one profile fails the build
    # (Myelin std::bad_alloc), while each alone, and these two profiles together, build (163 s).
    # Tiny: one profile with every axis dynamic (builds in seconds; the tiny preset tries windows).
    profiles=MappingProxyType(
        {
            "real": tuple(MappingProxyType({"B": DimRange(1, 2, 2), "F": DimRange(f, f, f), **_REAL_HW}) for f in (72, 16)),
            "tiny": (MappingProxyType({"B": DimRange(1, 2, 2), "F": DimRange(1, 16, 32), **_TINY_HW}),),
        }
    ),
    export_point={"B": 2, "F": 3, "H": 64, "W": 128},
    validation_points=({"B": 1, "F": 4, "H": 128, "W": 64}, {"B": 2, "F": 5, "H": 192, "W": 64}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=Tolerance(4e-3, 3e-3),  # measured worst: abs 1.2e-3, rel 9.3e-4 (1.4e-3 / 1.0e-3 without the fp32 norms);
    # full-size config with random fan-in-scaled weights: abs 2.9e-3, rel 1.5e-3
)
VAE_DECODER = StageSpec(
    name="vae_decoder",
    description="Temporal VAE decoder over N frames (latents already divided by the scaling factor)",
    inputs=(TensorSpec("latents", ("N", "L", "H/8", "W/8")),),
    outputs=(TensorSpec("frames", ("N", 3, "H", "W")),),
    profiles=_sets({"N": DimRange(1, 8, 16), **_REAL_HW}, {"N": DimRange(1, 8, 16), **_TINY_HW}),
    export_point={"N": 3, "H": 64, "W": 128},
    validation_points=({"N": 4, "H": 128, "W": 64}, {"N": 6, "H": 192, "W": 64}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=Tolerance(1e-2, 7e-3),  # measured worst: abs 3.4e-3, rel 2.3e-3
)

# ------------------------------------------------------------------------------- DWPose (shipped)
# The released DWPose files are ONNX already: fixed batch-1 fp32 signatures, never re-exported; the
# specs describe them for engine builds. Names and shapes come from the one place that defines them
# for the DWPose code (its tiny stand-ins have the released signatures).
from mimic.mimicmotion_ref.dwpose.tiny_models import (  # noqa: E402
    DET_INPUT,
    DET_OUTPUT,
    DETECTOR_INPUT_SHAPE,
    DETECTOR_OUTPUT_SHAPE,
    POSE_INPUT,
    POSE_INPUT_SHAPE,
    POSE_OUTPUTS,
    SIMCC_X_SHAPE,
    SIMCC_Y_SHAPE,
)


def _static() -> Mapping[str, tuple[Mapping[str, DimRange], ...]]:
    one: Mapping[str, DimRange] = MappingProxyType({})
    return MappingProxyType({"real": (one,), "tiny": (one,)})


DWPOSE_DETECTOR = StageSpec(
    name="dwpose_detector",
    description="YOLOX-L person detector (released yolox_l.onnx): letterboxed 640x640 RGB 0..255",
    inputs=(TensorSpec(DET_INPUT, tuple(DETECTOR_INPUT_SHAPE), fp16_dtype="float32", kind="det_pixels"),),
    outputs=(TensorSpec(DET_OUTPUT, tuple(DETECTOR_OUTPUT_SHAPE), fp16_dtype="float32"),),
    profiles=_static(),
    export_point={},
    validation_points=({}, {}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=None,
    exported=False,
    onnx_file="yolox_l.onnx",
)
DWPOSE_POSE = StageSpec(
    name="dwpose_pose",
    description="RTMPose/DWPose whole-body model (released dw-ll_ucoco_384.onnx): 384x288 crop -> SimCC",
    inputs=(TensorSpec(POSE_INPUT, tuple(POSE_INPUT_SHAPE), fp16_dtype="float32"),),
    outputs=(TensorSpec(POSE_OUTPUTS[0], tuple(SIMCC_X_SHAPE), fp16_dtype="float32"), TensorSpec(POSE_OUTPUTS[1], tuple(SIMCC_Y_SHAPE), fp16_dtype="float32")),
    profiles=_static(),
    export_point={},
    validation_points=({}, {}),
    tol_fp32=Tolerance(1e-4, 1e-4),
    tol_fp16=None,
    exported=False,
    onnx_file="dw-ll_ucoco_384.onnx",
)

# The five stages exported from PyTorch (order = pipeline order); runtime.backend_api.STAGE_NAMES.
STAGES: Mapping[str, StageSpec] = MappingProxyType({s.name: s for s in (IMAGE_ENCODER, VAE_ENCODER, POSE_NET, UNET, VAE_DECODER)})
DWPOSE_STAGES: Mapping[str, StageSpec] = MappingProxyType({s.name: s for s in (DWPOSE_DETECTOR, DWPOSE_POSE)})
ALL_STAGES: Mapping[str, StageSpec] = MappingProxyType({**STAGES, **DWPOSE_STAGES})


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
