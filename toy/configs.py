"""Sizes of the toy model (the diffusers/transformers configs written beside its weights), its
generation defaults and where its committed weights live."""
from __future__ import annotations

from pathlib import Path

from mimic.model.tiny import CLIP_CONFIG, FEATURE_EXTRACTOR_CONFIG, MODEL_INDEX, SCHEDULER_CONFIG, UNET_CONFIG, VAE_CONFIG
from mimic.model.presets import TOY_GENERATION, TOY_WEIGHTS_DIR as WEIGHTS_DIR  # noqa: F401  (defined once, in the preset table)

TRAIN_LOG = Path(__file__).resolve().parent / "train_log.csv"
TRAIN_SUMMARY = Path(__file__).resolve().parent / "train_summary.json"

# Output size (H, W): resolution 128 portrait, as GenerationConfig(resolution=128) crops it.
TOY_HW = (192, 128)

# The tiny preset's layout, 64 channels wide (attention at 24x16 and, in the mid block, 12x8): the
# output GroupNorm (32 groups) then sees two channels per group, not one.
TOY_UNET_CONFIG = {**UNET_CONFIG, "block_out_channels": [64, 64], "num_attention_heads": [4, 4], "num_frames": 8}
TOY_VAE_CONFIG = dict(VAE_CONFIG)  # scaling_factor is replaced by the measured one when written
TOY_CLIP_CONFIG = dict(CLIP_CONFIG)
TOY_SCHEDULER_CONFIG = dict(SCHEDULER_CONFIG)
TOY_FEATURE_EXTRACTOR_CONFIG = dict(FEATURE_EXTRACTOR_CONFIG)
TOY_MODEL_INDEX = dict(MODEL_INDEX)

