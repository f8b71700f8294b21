"""Frozen configuration of one generation: every knob of upstream's configs/test.yaml."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from mimic.errors import InputError


@dataclass(frozen=True)
class GenerationConfig:
    """Defaults are the released 1.1 settings (configs/test.yaml + inference.py's hard-coded values)."""

    resolution: int = 576  # short side of the output, px (multiple of 64)
    window: int = 72  # frames per denoising window (upstream's misnamed ``num_frames``)
    overlap: int = 6  # nominal overlap; windows share overlap-1 real frames
    steps: int = 25
    guidance_min: float = 2.0
    guidance_max: float = 2.0
    fps_cond: int = 7  # conditioning fps (hard-coded 7 upstream; the added time id is fps_cond-1)
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.0
    decode_chunk: int = 8
    sample_stride: int = 2
    output_fps: float = 15.0
    seed: int = 42

    def __post_init__(self) -> None:
        checks = [
            (self.resolution >= 64 and self.resolution % 64 == 0, f"resolution must be a positive multiple of 64, got {self.resolution}"),
            (self.window >= 2, f"window must be >= 2, got {self.window}"),
            (0 <= self.overlap < self.window, f"overlap must be in [0, window), got {self.overlap}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.guidance_max > 1.0, f"guidance_max must be > 1 (classifier-free guidance), got {self.guidance_max}"),
            (self.guidance_min >= 0.0, f"guidance_min must be >= 0, got {self.guidance_min}"),
            (self.decode_chunk >= 1, f"decode_chunk must be >= 1, got {self.decode_chunk}"),
            (self.sample_stride >= 1, f"sample_stride must be >= 1, got {self.sample_stride}"),
            (self.output_fps > 0, f"output_fps must be > 0, got {self.output_fps}"),
            (self.noise_aug_strength >= 0, f"noise_aug_strength must be >= 0, got {self.noise_aug_strength}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(msg)

    def with_overrides(self, **overrides) -> "GenerationConfig":
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"unknown config keys {unknown}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)
