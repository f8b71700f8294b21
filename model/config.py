"""Frozen configuration of one generation: every knob of upstream's configs/test.yaml."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from mimic.errors import InputError

# The command-line flag of each setting (messages name what the user typed); settings without a
# flag are config/jobs-file keys only.
FLAGS = {
    "resolution": "--resolution", "window": "--window", "overlap": "--overlap", "steps": "--steps",
    "guidance_min": "--guidance-min", "guidance_max": "--guidance-max", "noise_aug_strength": "--noise-aug",
    "decode_chunk": "--decode-chunk", "sample_stride": "--sample-stride", "output_fps": "--fps", "seed": "--seed",
    "schedule": "--schedule",
}


def flag(name: str) -> str:
    """``--fps`` for ``output_fps``; the key itself for file-only settings (``motion_bucket_id``)."""
    return FLAGS.get(name, name)


# (type, min, max) of every setting: checked on construction, so a config file, a jobs file and the
# CLI get the same one-line errors before anything loads.
_LIMITS = {
    "resolution": (int, 64, 4096),
    "window": (int, 2, 1024),
    "overlap": (int, 0, 1023),
    "steps": (int, 1, 1000),
    "guidance_min": (float, 0.0, 100.0),
    "guidance_max": (float, 0.0, 100.0),
    "fps_cond": (int, 1, 255),
    "motion_bucket_id": (int, 0, 1023),
    "noise_aug_strength": (float, 0.0, 10.0),
    "decode_chunk": (int, 1, 1024),
    "sample_stride": (int, 1, 1000),
    "output_fps": (float, 1.0, 240.0),
    "seed": (int, 0, 2**63 - 1),
}
# Settings that take one of a few names.
_CHOICES = {"schedule": ("karras", "ays")}  # noise schedules of model.scheduler


def check_setting(name: str, value) -> None:
    """Type and range of one setting, with the user's flag in the message (InputError)."""
    if name in _CHOICES:
        if not isinstance(value, str) or value not in _CHOICES[name]:
            raise InputError(f"{flag(name)} must be one of {', '.join(_CHOICES[name])}, got {value!r}")
        return
    if name not in _LIMITS:
        raise InputError(f"unknown setting {name!r}; known: {sorted([*_LIMITS, *_CHOICES])}")
    kind, lo, hi = _LIMITS[name]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        what = "an integer"
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        what = "a number"
    if not ok:
        raise InputError(f"{flag(name)} must be {what}, got {value!r}")
    if not lo <= value <= hi:
        span = f"{lo}..{hi}" if kind is int else f"{lo:g}..{hi:g}"
        raise InputError(f"{flag(name)} must be in {span}, got {value:g}")


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
    schedule: str = "karras"  # noise levels: "karras" (released) or "ays" (Align Your Steps for SVD)

    def __post_init__(self) -> None:
        for f in fields(self):
            check_setting(f.name, getattr(self, f.name))
        checks = [
            (self.resolution % 64 == 0, f"--resolution must be a positive multiple of 64, got {self.resolution}"),
            (self.overlap < self.window, f"--overlap must be smaller than --window ({self.window}), got {self.overlap}"),
            (self.guidance_max > 1.0, f"--guidance-max must be > 1 (classifier-free guidance), got {self.guidance_max:g}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(msg)

    def with_overrides(self, **overrides) -> "GenerationConfig":
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"unknown settings {unknown}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)
