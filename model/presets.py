"""Where weights come from: ``--preset tiny|toy`` or ``--weights DIR`` plus per-component overrides.

Every preset is one row of :data:`PRESETS`: its generation defaults, the function that makes or
finds its weights (named as ``module:function`` and imported only when the weights are needed) and
the ``--shapes`` its engines are built for. This module imports neither torch nor diffusers, so the
CLI's help and option checks can read the table in milliseconds.

``tiny``: random weights generated into the cache (fast tests). ``toy``: the trained toy model
committed in ``toy/weights`` (``python -m mimic.toy.train``), with the tiny preset's DWPose files.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mimic.errors import InputError
from mimic.model.config import GenerationConfig

if TYPE_CHECKING:
    from mimic.model.weights import WeightsLayout

# Where the toy preset's committed weights live (``mimic.toy`` trains them; a layer above this one).
TOY_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "toy" / "weights"

# Quick CPU settings for the tiny preset (the released defaults are GenerationConfig()).
TINY_GENERATION = GenerationConfig(resolution=192, window=16, overlap=6, steps=8)
# The toy preset: 8-frame windows (the training length), 10 steps.
TOY_GENERATION = GenerationConfig(resolution=128, window=8, overlap=4, steps=10)


@dataclass(frozen=True)
class Preset:
    """One built-in weight set. ``make`` is ``"module:function"``, a function of no arguments that
    returns the :class:`~mimic.model.weights.WeightsLayout` (imported lazily: it needs torch).
    ``shapes`` is the default ``--shapes`` of ``mimic build-engines`` (``tiny``: the small profile set)."""

    name: str
    description: str
    defaults: GenerationConfig
    make: str
    shapes: str

    def layout(self) -> WeightsLayout:
        module, _, function = self.make.partition(":")
        return getattr(importlib.import_module(module), function)()


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("tiny", "random weights in the real formats, generated once into the cache (fast tests)",
           TINY_GENERATION, make="mimic.model.tiny:ensure_tiny_weights", shapes="tiny"),
    Preset("toy", "the trained toy model committed in toy/weights, with the tiny DWPose files",
           TOY_GENERATION, make="mimic.model.presets:toy_layout", shapes="tiny"),
)}
PRESET_NAMES = tuple(PRESETS)


def preset_named(name: str) -> Preset:
    """The registry entry, or the one-line error listing the known presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; known presets: {', '.join(PRESET_NAMES)}") from None


def layout_from_options(
    preset: str | None = None,
    weights: Path | None = None,
    svd: str | None = None,
    checkpoint: Path | None = None,
    det_model: Path | None = None,
    pose_model: Path | None = None,
) -> WeightsLayout:
    from mimic.model.weights import resolve_weights

    if preset is not None:
        entry = preset_named(preset)
        if weights is not None:
            raise InputError("give either --preset or --weights, not both")
        base = entry.layout()
        return resolve_weights(None, svd or base.svd, checkpoint or base.checkpoint, det_model or base.det_model, pose_model or base.pose_model)
    if weights is None and checkpoint is None:
        raise InputError("no weights: pass --weights DIR (upstream layout) or --preset tiny")
    return resolve_weights(weights, svd, checkpoint, det_model, pose_model)


def checked_layout(preset: str | None = None, weights: Path | None = None, svd: str | None = None, checkpoint: Path | None = None,
                   det_model: Path | None = None, pose_model: Path | None = None) -> WeightsLayout:
    """``layout_from_options`` for a command that loads every part (run, farm, the Python API): any
    missing parts are one error listing them all, with their sources (``weights.check_layout``)."""
    from mimic.model.weights import check_layout

    layout = layout_from_options(preset, weights, svd, checkpoint, det_model, pose_model)
    if preset is None:
        check_layout(layout, Path(weights) if weights is not None else None)
    return layout


def toy_layout() -> WeightsLayout:
    """The committed toy weights (SVD folder + checkpoint) with the tiny preset's DWPose models."""
    from mimic.errors import WeightsError
    from mimic.model.tiny import ensure_tiny_dwpose
    from mimic.model.weights import CHECKPOINT_NAMES, SVD_SUBDIR, WeightsLayout

    checkpoint = TOY_WEIGHTS_DIR / CHECKPOINT_NAMES[0]
    if not checkpoint.is_file():
        raise WeightsError(f"the toy weights are missing ({checkpoint}); train them with `python -m mimic.toy.train`")
    det, pose = ensure_tiny_dwpose()
    return WeightsLayout(svd=str(TOY_WEIGHTS_DIR / SVD_SUBDIR), checkpoint=checkpoint, det_model=det, pose_model=pose)


def default_generation(preset: str | None) -> GenerationConfig:
    """The released settings for real weights (``None``); a preset's own quick settings otherwise."""
    return GenerationConfig() if preset is None else preset_named(preset).defaults


def dwpose_paths(preset: str | None, weights: Path | None, det_model: Path | None, pose_model: Path | None) -> tuple[Path, Path]:
    """Only the two DWPose ONNX files (for `mimic pose`, which needs nothing else)."""
    from mimic.model.weights import DET_MODEL, POSE_MODEL

    if det_model is not None and pose_model is not None:
        return Path(det_model), Path(pose_model)
    if preset is not None or weights is not None:
        if preset is not None:
            layout = layout_from_options(preset=preset)
            base_det, base_pose = layout.det_model, layout.pose_model
        else:
            from mimic.errors import WeightsError
            from mimic.model.weights import WeightsLayout, check_layout

            if not Path(weights).is_dir():
                raise WeightsError(f"weights directory {weights} does not exist")
            base_det, base_pose = Path(weights) / DET_MODEL, Path(weights) / POSE_MODEL
            det, pose = Path(det_model or base_det), Path(pose_model or base_pose)
            check_layout(WeightsLayout("", Path(), det, pose), Path(weights), parts=("det_model", "pose_model"))
        return Path(det_model or base_det), Path(pose_model or base_pose)
    raise InputError("no DWPose models: pass --weights DIR, --preset tiny|toy, or --det-model and --pose-model")
