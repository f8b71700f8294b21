"""Where the ``toy`` preset's committed weights live and what it renders by default (the toy model
itself, its data and training are in ``mimic.toy``, a layer above this one)."""
from __future__ import annotations

from pathlib import Path

from mimic.model.config import GenerationConfig

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "toy" / "weights"

# What the demo and `--preset toy` run by default: 8-frame windows (the training length), 10 steps.
TOY_GENERATION = GenerationConfig(resolution=128, window=8, overlap=4, steps=10, output_fps=8.0)
