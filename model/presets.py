"""Where weights come from: ``--preset tiny|toy`` or ``--weights DIR`` plus per-component overrides.

``tiny``: random weights generated into the cache (fast tests). ``toy``: the trained toy model
committed in ``toy/weights`` (``python -m mimic.toy.train``), with the tiny preset's DWPose files.
"""
from __future__ import annotations

from pathlib import Path

from mimic.errors import InputError
from mimic.model.config import GenerationConfig
from mimic.model.tiny import TINY_GENERATION, ensure_tiny_weights
from mimic.model.weights import WeightsLayout, resolve_weights

PRESETS = ("tiny", "toy")


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
        base = toy_layout() if preset == "toy" else ensure_tiny_weights()
        return resolve_weights(None, svd or base.svd, checkpoint or base.checkpoint, det_model or base.det_model, pose_model or base.pose_model)
    if weights is None and checkpoint is None:
        raise InputError("no weights: pass --weights DIR (upstream layout) or --preset tiny")
    return resolve_weights(weights, svd, checkpoint, det_model, pose_model)


def toy_layout() -> WeightsLayout:
    """The committed toy weights (SVD folder + checkpoint) with the tiny preset's DWPose models."""
    from mimic.errors import WeightsError
    from mimic.model.weights import CHECKPOINT_NAMES, SVD_SUBDIR
    from mimic.model.toy_preset import WEIGHTS_DIR

    checkpoint = WEIGHTS_DIR / CHECKPOINT_NAMES[0]
    if not checkpoint.is_file():
        raise WeightsError(f"the toy weights are missing ({checkpoint}); train them with `python -m mimic.toy.train`")
    det, pose = _tiny_dwpose()
    return WeightsLayout(svd=str(WEIGHTS_DIR / SVD_SUBDIR), checkpoint=checkpoint, det_model=det, pose_model=pose)


def _tiny_dwpose() -> tuple[Path, Path]:
    """The tiny preset's two DWPose files alone, written once into ``<cache>/tiny-dwpose-v1``."""
    import os
    import shutil
    import tempfile

    from mimic.model.tiny import cache_root
    from mimic.model.tiny_dwpose import write_tiny_dwpose
    from mimic.model.weights import DET_MODEL, POSE_MODEL

    base = cache_root()
    root = base / "tiny-dwpose-v1"
    if not (root / ".complete").is_file():
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tiny-dwpose-", dir=base))
        try:
            write_tiny_dwpose(tmp / DET_MODEL.parent)
            (tmp / ".complete").write_text("tiny-dwpose-v1\n")
            try:
                os.rename(tmp, root)
            except OSError:  # another process published it first
                if not (root / ".complete").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root / DET_MODEL, root / POSE_MODEL


def default_generation(preset: str | None) -> GenerationConfig:
    """The released settings for real weights; quick CPU settings for the tiny and toy presets."""
    if preset == "toy":
        from mimic.model.toy_preset import TOY_GENERATION

        return TOY_GENERATION
    return TINY_GENERATION if preset == "tiny" else GenerationConfig()


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
            base_det, base_pose = Path(weights) / DET_MODEL, Path(weights) / POSE_MODEL
        return Path(det_model or base_det), Path(pose_model or base_pose)
    raise InputError("no DWPose models: pass --weights DIR, --preset tiny|toy, or --det-model and --pose-model")
