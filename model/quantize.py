"""8-bit UNets (FP8 E4M3 or INT8) with NVIDIA Model Optimizer: the recipe, calibration, save and load.

ModelOpt (``nvidia-modelopt``, the project's ``quant`` extra) replaces each ``nn.Linear`` /
``nn.Conv2d`` / ``nn.Conv3d`` with a module that carries an input and a weight quantizer. Calibrated
("max" calibration: the largest magnitude each quantizer sees), the model *fake*-quantizes: values
are rounded to the 8-bit grid and back, in fp32, on any device. That model is what the quality
bench measures and what the Q/DQ ONNX export (``mimic.export.qdq``) writes out for TensorRT, whose
strongly typed builds take 8-bit precision only from Q/DQ nodes in the graph.

The starting point is NVIDIA's FP8 SVD UNet (TensorRT demo/Diffusion, see the design notes, wave 3
section 2): per-tensor E4M3 weights and inputs, max calibration, every Conv2d and almost every
Linear quantized, and these layers kept in 16 bits by name: time_emb_proj, time_embedding, conv_in,
conv_out, conv_shortcut, add_embedding, pos_embed, norm_out, proj_out. Every difference is listed by
:meth:`QuantRecipe.differences` and written into the manifest:

* **Conv3d (the temporal convolutions) quantized.** NVIDIA left them out because their quantized ONNX
  export failed; on this stack (torch 2.13, ModelOpt 0.47) both the FP8 and the INT8 export of the
  quantized Conv3d work, TensorRT-RTX builds them, and the per-group sensitivity bench
  (``python -m mimic.benchmarks.quant_sensitivity``) measures their cost: on the toy model they are
  among the cheapest groups (alone 56.4 dB from the fp32 output in FP8, 56.9 dB in INT8; added to
  NVIDIA's set, 47.35 -> 47.00 dB in FP8 and nothing measurable against the ground truth).
* **Calibration on real denoising trajectories**: the UNet calls of whole jobs (several puppet
  dances by default, or a jobs file), never a single image's steps.
* **INT8** (not in NVIDIA's SVD demo): ModelOpt's INT8 choices, per-output-channel weights and
  per-tensor inputs, same layers.
* No attention (softmax / BMM) quantizers: NVIDIA's default level 3.0 has none either.

Torch-side only (this layer imports neither the runtime nor the exporter): calibration is a
``forward_loop(model)`` the caller provides (``mimic.benchmarks.quant_sensitivity`` renders jobs).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from mimic.errors import ExportError, InputError
from mimic.files import atomic_write_text

log = logging.getLogger(__name__)

PRECISIONS = ("fp8", "int8")
MODELOPT_REQUIREMENT = "nvidia-modelopt==0.47.0"
INSTALL_ADVICE = "pip install 'mimic-engine[quant]'"
STATE_FILE = "unet_quant.pt"  # ModelOpt's state + the calibrated quantizer buffers (the UNet weights stay in the checkpoint)
MANIFEST_FILE = "quant_manifest.json"
MANIFEST_SCHEMA = 1

# NVIDIA's SVD FP8 UNet keeps these in 16 bits (matched anywhere in a layer's name).
NVIDIA_KEPT_16BIT = ("time_emb_proj", "time_embedding", "conv_in", "conv_out", "conv_shortcut", "add_embedding", "pos_embed", "norm_out", "proj_out")
LAYER_TYPES = ("Linear", "Conv2d", "Conv3d")
NVIDIA_LAYER_TYPES = ("Linear", "Conv2d")
CONV3D_NOTE = ("Conv3d (temporal convolutions) quantized: NVIDIA disabled them because their quantized ONNX export failed; "
               "with torch 2.13 and ModelOpt 0.47 the FP8 and INT8 exports of QuantConv3d work and TensorRT-RTX builds them")
_TORCH_TYPES = {"Linear": nn.Linear, "Conv2d": nn.Conv2d, "Conv3d": nn.Conv3d}


# ------------------------------------------------------------------------------------ ModelOpt


def modelopt_available() -> bool:
    try:
        load_modelopt()
    except ExportError:
        return False
    return True


def load_modelopt():
    """``(mtq, mto)``: ModelOpt's quantization and optimisation modules; ExportError with the install
    line when the ``quant`` extra is missing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "transformers 5.x is not tested with modelopt": our UNet is diffusers', not transformers'
            import modelopt.torch.opt as mto
            import modelopt.torch.quantization as mtq
    except ImportError as err:
        raise ExportError(f"quantization needs NVIDIA Model Optimizer ({MODELOPT_REQUIREMENT}), which cannot be imported "
                          f"({str(err).splitlines()[0][:120]}): {INSTALL_ADVICE}") from None
    return mtq, mto


def _tensor_quantizer_type():
    from modelopt.torch.quantization.nn import TensorQuantizer

    return TensorQuantizer


# -------------------------------------------------------------------------------------- recipe


def check_precision(precision: str, flag: str = "--precision") -> str:
    if precision not in PRECISIONS:
        raise InputError(f"{flag}: unknown 8-bit precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


@dataclass(frozen=True)
class QuantRecipe:
    """What is quantized and how. ``layer_types``: module types that get quantizers; ``kept_16bit``:
    name fragments of layers left unquantized whatever their type."""

    precision: str
    layer_types: tuple[str, ...] = LAYER_TYPES
    kept_16bit: tuple[str, ...] = NVIDIA_KEPT_16BIT
    algorithm: str = "max"

    def __post_init__(self) -> None:
        check_precision(self.precision, "precision")
        unknown = [t for t in self.layer_types if t not in LAYER_TYPES]
        if unknown:
            raise InputError(f"unknown layer type(s) {', '.join(unknown)}; choose from {', '.join(LAYER_TYPES)}")
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        object.__setattr__(self, "kept_16bit", tuple(self.kept_16bit))

    # The 8-bit formats, as ModelOpt's QuantizerAttributeConfig fields.
    @property
    def weight_format(self) -> dict:
        if self.precision == "fp8":
            return {"num_bits": (4, 3), "axis": None}  # E4M3, one scale per tensor (NVIDIA's SVD choice)
        return {"num_bits": 8, "axis": 0}  # INT8, one scale per output channel (ModelOpt's INT8 default)

    @property
    def input_format(self) -> dict:
        return {"num_bits": (4, 3), "axis": None} if self.precision == "fp8" else {"num_bits": 8, "axis": None}

    def modelopt_config(self) -> dict:
        """The config for ``mtq.quantize`` in ModelOpt's list form (entries applied in order)."""
        entries: list[dict] = [{"quantizer_name": "*", "enable": False}]
        for kind in self.layer_types:
            parent = f"nn.{kind}"
            entries.append({"quantizer_name": "*weight_quantizer", "parent_class": parent, "cfg": dict(self.weight_format)})
            entries.append({"quantizer_name": "*input_quantizer", "parent_class": parent, "cfg": dict(self.input_format)})
        for fragment in self.kept_16bit:
            entries.append({"quantizer_name": f"*{fragment}*", "enable": False})
        return {"quant_cfg": entries, "algorithm": self.algorithm}

    def selects(self, name: str, module: nn.Module) -> bool:
        """Whether the layer ``name`` gets quantizers (the same decision as ``modelopt_config``)."""
        kinds = tuple(_TORCH_TYPES[t] for t in self.layer_types)
        return isinstance(module, kinds) and not any(f in name for f in self.kept_16bit)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "layer_types": list(self.layer_types), "kept_16bit": list(self.kept_16bit),
                "algorithm": self.algorithm, "weight_format": _jsonable(self.weight_format),
                "input_format": _jsonable(self.input_format)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "QuantRecipe":
        return cls(precision=d["precision"], layer_types=tuple(d["layer_types"]), kept_16bit=tuple(d["kept_16bit"]),
                   algorithm=d.get("algorithm", "max"))

    def differences(self) -> list[str]:
        """How this recipe differs from NVIDIA's FP8 SVD UNet (TensorRT demo/Diffusion), one line each."""
        out = []
        if self.precision == "int8":
            out.append("INT8 instead of FP8 (NVIDIA ships no INT8 SVD UNet): per-output-channel INT8 weights, per-tensor INT8 inputs")
        if "Conv3d" in self.layer_types:
            out.append(CONV3D_NOTE)
        for t in NVIDIA_LAYER_TYPES:
            if t not in self.layer_types:
                out.append(f"{t} layers not quantized")
        kept, nvidia = set(self.kept_16bit), set(NVIDIA_KEPT_16BIT)
        if kept - nvidia:
            out.append("also kept in 16 bits: " + ", ".join(sorted(kept - nvidia)))
        if nvidia - kept:
            out.append("quantized although NVIDIA keeps them in 16 bits: " + ", ".join(sorted(nvidia - kept)))
        if self.algorithm != "max":
            out.append(f"calibration algorithm {self.algorithm} (NVIDIA: max)")
        out.append("calibrated on the UNet calls of whole denoising jobs (several dances or a jobs file), not one image's steps")
        return out


def default_recipe(precision: str) -> QuantRecipe:
    """The recipe ``mimic quantize`` uses: NVIDIA's SVD choices plus the temporal Conv3d layers."""
    return QuantRecipe(precision=check_precision(precision))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------- layer groups
# Where a layer sits (block) and what it does (kind): the sensitivity bench quantizes one group at a
# time, and the manifest counts the quantized layers per group.
_KIND_RULES: tuple[tuple[str, str], ...] = (
    ("conv_in", "io"), ("conv_out", "io"),
    ("time_embedding", "embedding"), ("add_embedding", "embedding"), ("pos_embed", "embedding"), ("time_emb_proj", "embedding"),
    ("conv_shortcut", "shortcut"),
    ("proj_out", "proj_in_out"), ("proj_in", "proj_in_out"),
    ("temporal_transformer_blocks", "temporal_attention"),
    ("transformer_blocks", "spatial_attention"),
    ("temporal_res_block", "temporal_conv"),
    ("spatial_res_block", "spatial_conv"),
    ("downsamplers", "resample"), ("upsamplers", "resample"),
)
KINDS = tuple(dict.fromkeys(k for _, k in _KIND_RULES))


def layer_kind(name: str) -> str:
    """The job of layer ``name`` in the SVD UNet (``spatial_attention``, ``temporal_conv``, ...)."""
    for fragment, kind in _KIND_RULES:
        if fragment in name:
            return kind
    return "other"


def layer_block(name: str) -> str:
    """Where layer ``name`` sits: ``down_blocks.0``, ``mid_block``, ``up_blocks.1`` or ``outer``."""
    m = re.match(r"^(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.", name)
    return m.group(1) if m else "outer"


def quantizable_layers(model: nn.Module, types: Iterable[str] = LAYER_TYPES) -> dict[str, nn.Module]:
    kinds = tuple(_TORCH_TYPES[t] for t in types)
    return {n: m for n, m in model.named_modules() if isinstance(m, kinds)}


def quantizers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ModelOpt TensorQuantizer of ``model`` by its full name (``...conv1.input_quantizer``)."""
    tq = _tensor_quantizer_type()
    return {n: m for n, m in model.named_modules() if isinstance(m, tq)}


def quantized_layers(model: nn.Module) -> list[str]:
    """Names of the layers with at least one enabled quantizer."""
    names = []
    for n, q in quantizers(model).items():
        if q.is_enabled:
            names.append(n.rsplit(".", 1)[0])
    return list(dict.fromkeys(names))


def group_counts(layers: Iterable[str]) -> dict[str, dict[str, int]]:
    kinds: dict[str, int] = {}
    blocks: dict[str, int] = {}
    for n in layers:
        kinds[layer_kind(n)] = kinds.get(layer_kind(n), 0) + 1
        blocks[layer_block(n)] = blocks.get(layer_block(n), 0) + 1
    return {"by_kind": dict(sorted(kinds.items())), "by_block": dict(sorted(blocks.items()))}


def set_enabled_layers(model: nn.Module, keep: Callable[[str], bool]) -> int:
    """Enable the quantizers of the layers for which ``keep(layer_name)`` holds, disable the others
    (all were calibrated: toggling needs no new calibration). Returns the number of layers enabled."""
    layers = set()
    for n, q in quantizers(model).items():
        layer = n.rsplit(".", 1)[0]
        if keep(layer) and getattr(q, "_amax", None) is not None:
            q.enable()
            layers.add(layer)
        else:
            q.disable()
    return len(layers)


# --------------------------------------------------------------------------------- quantization


@dataclass(frozen=True)
class QuantSummary:
    precision: str
    layers: int  # layers with enabled quantizers
    quantizers: int  # enabled quantizers (input + weight per layer)
    groups: dict = field(default_factory=dict)
    seconds: float = 0.0


def quantize_unet(unet: nn.Module, recipe: QuantRecipe, forward_loop: Callable[[nn.Module], None]) -> QuantSummary:
    """Insert ModelOpt quantizers into ``unet`` *in place* per ``recipe`` and calibrate them with
    ``forward_loop(unet)`` (which runs the UNet on calibration inputs; quantization is off while it
    runs, so it sees the full-precision trajectories). Afterwards ``unet`` fake-quantizes."""
    import time

    mtq, _ = load_modelopt()
    t0 = time.perf_counter()
    config = recipe.modelopt_config()
    calls = {"n": 0}

    stdout = sys.stdout

    def loop(model: nn.Module) -> None:
        if model is not unet:  # mtq converts in place; the caller's loop runs the object it holds
            raise RuntimeError("ModelOpt returned a new module; the calibration loop would not see it")
        with contextlib.redirect_stdout(stdout):  # the caller's progress lines are shown
            forward_loop(model)
        calls["n"] += 1

    out = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(out):  # ModelOpt prints "Inserted N quantizers"
        warnings.simplefilter("ignore")
        result = mtq.quantize(unet, config, loop)
    for line in out.getvalue().splitlines():
        log.debug(f"modelopt: {line}")
    if result is not unet:
        raise RuntimeError("ModelOpt did not quantize the UNet in place")
    if calls["n"] != 1:
        raise RuntimeError("the calibration loop did not run")
    uncalibrated = [n for n, q in quantizers(unet).items() if q.is_enabled and getattr(q, "_amax", None) is None]
    if uncalibrated:
        raise ExportError(f"{len(uncalibrated)} quantizer(s) saw no calibration data (e.g. {uncalibrated[0]}): "
                          "the calibration jobs never ran those layers")
    layers = quantized_layers(unet)
    enabled = sum(q.is_enabled for q in quantizers(unet).values())
    return QuantSummary(recipe.precision, len(layers), enabled, group_counts(layers), time.perf_counter() - t0)


# ----------------------------------------------------------------------------------- save / load


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("nvidia-modelopt", "torch", "diffusers", "mimic-engine", "onnx", "onnxruntime"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def save_quantized(unet: nn.Module, out_dir: Path, recipe: QuantRecipe, summary: QuantSummary, *, calibration: Mapping,
                   weights: Mapping, extra: Mapping | None = None) -> Path:
    """Write ``out_dir/unet_quant.pt`` (ModelOpt's ``modelopt_state`` and the calibrated quantizer
    buffers; the UNet weights are not copied: ``weights`` identifies them) and
    ``out_dir/quant_manifest.json`` (precision, recipe, its differences from NVIDIA's, calibration
    set, versions). Returns the manifest path."""
    _, mto = load_modelopt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "modelopt_state": mto.modelopt_state(unet),
        "quantizer_state": {k: v.detach().cpu().clone() for k, v in unet.state_dict().items() if "_quantizer." in k},
    }
    from mimic.files import publish, temp_path

    tmp = temp_path(out_dir / STATE_FILE)
    try:
        torch.save(state, tmp)
        publish(tmp, out_dir / STATE_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "precision": recipe.precision,
        "state_file": STATE_FILE,
        "recipe": recipe.to_dict(),
        "modelopt_config": _jsonable(recipe.modelopt_config()),
        "differences_from_nvidia": recipe.differences(),
        "quantized": {"layers": summary.layers, "quantizers": summary.quantizers, **summary.groups},
        "calibration": dict(calibration),
        "weights": dict(weights),
        "versions": versions(),
        **(dict(extra) if extra else {}),
    }
    path = out_dir / MANIFEST_FILE
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(quant_dir: Path) -> dict:
    path = Path(quant_dir) / MANIFEST_FILE
    if not path.is_file():
        raise InputError(f"{quant_dir} holds no quantized UNet ({MANIFEST_FILE} missing): run `mimic quantize` first")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path}: {err}") from None
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise InputError(f"{path}: manifest schema {manifest.get('schema')!r}, expected {MANIFEST_SCHEMA}: quantize again")
    return manifest


def load_quantized(unet: nn.Module, quant_dir: Path) -> nn.Module:
    """Restore a saved quantization into ``unet`` (the same weights, freshly loaded, fp32) in place
    and return it, fake-quantizing exactly as when it was saved."""
    _, mto = load_modelopt()
    quant_dir = Path(quant_dir)
    manifest = read_manifest(quant_dir)
    path = quant_dir / manifest.get("state_file", STATE_FILE)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise InputError(f"cannot read {path}: {str(err).splitlines()[0][:200]}") from None
    device = next(unet.parameters()).device
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        restored = mto.restore_from_modelopt_state(unet, state["modelopt_state"])
    if restored is not unet:
        raise RuntimeError("ModelOpt did not restore the UNet in place")
    missing, unexpected = unet.load_state_dict({k: v.to(device) for k, v in state["quantizer_state"].items()}, strict=False)
    lost = [k for k in missing if "_quantizer." in k]
    if unexpected or lost:
        raise InputError(f"{path} does not fit this UNet ({len(unexpected)} unexpected, {len(lost)} missing quantizer tensors): "
                         "quantize these weights again")
    return unet.eval()
