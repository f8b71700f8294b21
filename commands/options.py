"""Options shared by several commands, declared once.

* Weight, device and runtime options are ``Annotated`` aliases: a command names the ones it takes
  (``weights: Weights = None``) and they read the same everywhere.
* Generation settings are not written out by any command: :func:`generation_options` adds one
  option per setting of ``mimic.model.config.SETTINGS`` (flag, type, help, range and per-preset
  defaults come from there; ``commands/cli_help.py`` renders them) to a command's signature and
  hands the command the given ones as ``settings`` (field name -> value). ``mimic run`` and ``mimic
  farm`` both use it, so their generation options cannot drift apart.

Torch-free: ``mimic run --help`` and every bad-input error that needs no model import neither torch
nor diffusers.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from mimic.commands.cli_help import SETTINGS_PANEL
from mimic.commands.conventions import BACKENDS, PRESET_HELP, PRESETS, choices, in_range
from mimic.errors import InputError
from mimic.model.config import COMPOSITE_HELP, COMPOSITES, SETTINGS

OVERRIDES = "(overrides --weights/--preset)."
Weights = Annotated[Optional[Path], typer.Option("--weights", help="Upstream weights folder (DWPose/, SVD/, MimicMotion_1-1.pth).")]
Preset = Annotated[Optional[str], typer.Option("--preset", metavar=choices(PRESETS), help=PRESET_HELP)]
Svd = Annotated[Optional[str], typer.Option("--svd", help=f"SVD diffusers folder or hub id {OVERRIDES}")]
Checkpoint = Annotated[Optional[Path], typer.Option("--checkpoint", help=f"MimicMotion .pth {OVERRIDES}")]
DetModel = Annotated[Optional[Path], typer.Option("--det-model", help=f"yolox_l.onnx {OVERRIDES}")]
PoseModel = Annotated[Optional[Path], typer.Option("--pose-model", help=f"dw-ll_ucoco_384.onnx {OVERRIDES}")]
Engines = Annotated[Optional[Path], typer.Option("--engines", help="Engine folder from `mimic build-engines` (tensorrt).")]
OnnxDir = Annotated[Optional[Path], typer.Option("--onnx", help="Exported ONNX folder (onnxruntime; default: exported into the cache).")]
Backend = Annotated[str, typer.Option("--backend", metavar=choices(BACKENDS), help="Execution backend (tensorrt needs --engines).")]
Precision = Annotated[Optional[str], typer.Option("--precision", metavar="fp16|fp32|fp8|int8", help=(
    "Default: fp16 on CUDA, fp32 on the CPU (tensorrt: what its engines were built as). fp8: the UNet's transformer Linear "
    "layers in FP8, the rest fp16 (--backend torch on a CUDA GPU with compute capability >= 8.9), or the 8-bit UNet engine "
    "of `build-engines --precision fp8`; int8: that engine (--backend tensorrt)."))]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="Settings file (YAML/JSON mapping of settings; upstream's test.yaml too).")]
NoPad = Annotated[bool, typer.Option("--no-pad", help="Fail instead of padding clips shorter than a window.")]
Audio = Annotated[bool, typer.Option("--audio", help="Copy the driving video's audio (aligned to the sampled frames).")]
CheckpointEvery = Annotated[int, typer.Option("--checkpoint-every", help=f"Save each job's latents every N denoising steps, to resume an interrupted job (0: never). {in_range(0)}")]
CheckpointDir = Annotated[Optional[Path], typer.Option("--checkpoint-dir", help="Folder for resume checkpoints (default: OUT.checkpoint/ beside each output).")]
NoResume = Annotated[bool, typer.Option("--no-resume", help="Start over even where a checkpoint of the same job exists.")]


@dataclass(frozen=True)
class WeightChoice:
    """``--preset`` or ``--weights``, and the per-part overrides."""

    preset: str | None = None
    weights: Path | None = None
    svd: str | None = None
    checkpoint: Path | None = None
    det_model: Path | None = None
    pose_model: Path | None = None

    def layout(self):
        from mimic.model.presets import checked_layout

        return checked_layout(**asdict(self))


@dataclass(frozen=True)
class RenderChoice:
    """How jobs render, for commands that render jobs files (run, farm): backend, graphs, precision,
    padding, audio, the settings file and resumable checkpoints."""

    backend: str = "onnxruntime"
    engines: Path | None = None
    onnx_dir: Path | None = None
    precision: str | None = None
    config: Path | None = None
    pad: bool = True
    audio: bool = False
    checkpoint_every: int = 1
    checkpoint_dir: Path | None = None
    resume: bool = True


_GROUPS = {
    "weight_choice": (WeightChoice, [("preset", Preset, None), ("weights", Weights, None), ("svd", Svd, None), ("checkpoint", Checkpoint, None),
                                     ("det_model", DetModel, None), ("pose_model", PoseModel, None)]),
    "render_choice": (RenderChoice, [("config", ConfigFile, None), ("engines", Engines, None), ("onnx_dir", OnnxDir, None),
                                     ("backend", Backend, "onnxruntime"), ("precision", Precision, None), ("no_pad", NoPad, False),
                                     ("audio", Audio, False), ("checkpoint_every", CheckpointEvery, 1), ("checkpoint_dir", CheckpointDir, None),
                                     ("no_resume", NoResume, False)]),
}
_NEGATED = {"no_pad": "pad", "no_resume": "resume"}  # a --no-X flag sets field X to False


def _with_group(command, group: str):
    """Add the options of ``_GROUPS[group]`` to ``command``'s signature; it receives them as one
    frozen dataclass in the keyword ``group``."""
    kind, params = _GROUPS[group]
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != group]
    prefix = group + "__"

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        given = {name[len(prefix):]: kwargs.pop(name) for name in list(kwargs) if name.startswith(prefix)}
        fields_ = {_NEGATED.get(k, k): (not v if k in _NEGATED else v) for k, v in given.items()}
        return command(*args, **{group: kind(**fields_)}, **kwargs)

    extra = [inspect.Parameter(prefix + name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
             for name, annotation, default in params]
    wrapper.__signature__ = signature.replace(parameters=[*own, *extra])
    return wrapper


def weight_options(command):
    """``--preset/--weights/--svd/--checkpoint/--det-model/--pose-model``, handed over as ``weight_choice``."""
    return _with_group(command, "weight_choice")


def render_options(command):
    """The backend, graphs, precision, settings file, padding, audio and checkpoint options of a
    command that renders jobs, handed over as ``render_choice``."""
    return _with_group(command, "render_choice")


_PREFIX = "setting_"  # the generated parameters' names (no clash with a command's own)


def _metavar(name: str) -> str | None:
    s = SETTINGS[name]
    return choices(s.choices) if s.choices else None


def _setting_parameters() -> list[inspect.Parameter]:
    params = []
    for name, s in SETTINGS.items():
        if not s.cli:
            continue
        flags = f"{s.flag}/{s.negative_flag}" if s.kind is bool else s.flag  # a switch: --draw-hands / --no-draw-hands
        option = typer.Option(None, flags, help=s.help, metavar=_metavar(name), rich_help_panel=SETTINGS_PANEL)
        params.append(inspect.Parameter(_PREFIX + name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[s.kind]))
    for key, names in COMPOSITES.items():
        option = typer.Option(None, f"--{key}", help=COMPOSITE_HELP[key], rich_help_panel=SETTINGS_PANEL)
        params.append(inspect.Parameter(_PREFIX + key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[SETTINGS[names[0]].kind]))
    return params


def generation_options(command):
    """Add every generation setting's option to ``command`` (which takes ``settings``); it is called
    with ``settings`` = the given ones by field name (a composite such as ``--guidance`` expanded,
    and refused beside the settings it sets)."""
    signature = inspect.signature(command, eval_str=True)  # real annotations: typer reads Annotated options off them
    own = [p for p in signature.parameters.values() if p.name != "settings"]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        given = {name[len(_PREFIX):]: kwargs.pop(name) for name in list(kwargs) if name.startswith(_PREFIX)}
        settings = {name: value for name, value in given.items() if value is not None and name in SETTINGS}
        for key, names in COMPOSITES.items():
            if given.get(key) is None:
                continue
            clash = [SETTINGS[n].flag for n in names if n in settings]
            if clash:
                raise InputError(f"give --{key} or {'/'.join(clash)}, not both")
            settings.update({n: given[key] for n in names})
        return command(*args, settings=settings, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *_setting_parameters()])
    return wrapper


def setting_flags() -> list[str]:
    """Every generation flag a command with :func:`generation_options` shows, in order."""
    return [s.flag for s in SETTINGS.values() if s.cli] + [f"--{key}" for key in COMPOSITES]
