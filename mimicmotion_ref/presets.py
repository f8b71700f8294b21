"""Where weights come from: ``--preset tiny`` or ``--weights DIR`` plus per-component overrides."""
from __future__ import annotations

from pathlib import Path

from mimic.errors import InputError
from mimic.mimicmotion_ref.config import GenerationConfig
from mimic.mimicmotion_ref.tiny import TINY_GENERATION, ensure_tiny_weights
from mimic.mimicmotion_ref.weights import WeightsLayout, resolve_weights

PRESETS = ("tiny",)


def layout_from_options(
    preset: str | None = None,
    weights: Path | None = None,
    svd: str | None = None,
    checkpoint: Path | None = None,
    det_model: Path | None = None,
    pose_model: Path | None = None,
) -> WeightsLayout:
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
        if weights is not None:
            raise InputError("give either --preset or --weights, not both")
        base = ensure_tiny_weights()
        return resolve_weights(None, svd or base.svd, checkpoint or base.checkpoint, det_model or base.det_model, pose_model or base.pose_model)
    if weights is None and checkpoint is None:
        raise InputError("no weights: pass --weights DIR (upstream layout) or --preset tiny")
    return resolve_weights(weights, svd, checkpoint, det_model, pose_model)


def default_generation(preset: str | None) -> GenerationConfig:
    """The released settings for real weights; quick CPU settings for the tiny preset."""
    return TINY_GENERATION if preset == "tiny" else GenerationConfig()


def dwpose_paths(preset: str | None, weights: Path | None, det_model: Path | None, pose_model: Path | None) -> tuple[Path, Path]:
    """Only the two DWPose ONNX files (for `mimic pose`, which needs nothing else)."""
    from mimic.mimicmotion_ref.weights import DET_MODEL, POSE_MODEL

    if det_model is not None and pose_model is not None:
        return Path(det_model), Path(pose_model)
    if preset is not None or weights is not None:
        if preset is not None:
            layout = layout_from_options(preset=preset)
            base_det, base_pose = layout.det_model, layout.pose_model
        else:
            base_det, base_pose = Path(weights) / DET_MODEL, Path(weights) / POSE_MODEL
        return Path(det_model or base_det), Path(pose_model or base_pose)
    raise InputError("no DWPose models: pass --weights DIR, --preset tiny, or --det-model and --pose-model")
