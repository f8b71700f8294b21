"""Every generation setting, declared once: the frozen :class:`GenerationConfig` (every knob of
upstream's configs/test.yaml) whose fields carry their :class:`Setting` (flag, type, range or
choices, unit, help, normalisation). ``mimic run``'s and ``mimic farm``'s options, their help, the
jobs-file keys, upstream's ``--config`` keys and the Python API's checks are all derived from it
(``SETTINGS``); per-preset defaults are the presets' ``GenerationConfig`` (``mimic.model.presets``).

Torch-free on purpose: the command line imports it to print help and refuse bad input at once.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, Callable, Mapping

from mimic.errors import InputError


def round_resolution(value: int) -> tuple[int, str | None]:
    """The UNet needs multiples of 64 (upstream crashes at 720): round to the nearest, with a warning."""
    if not isinstance(value, int) or isinstance(value, bool) or not 64 <= value <= 4096 or value % 64 == 0:
        return value, None  # multiples of 64 as they are; nonsense is refused by the range check
    rounded = max(64, int(round(value / 64)) * 64)
    return rounded, f"resolution {value} is not a multiple of 64; using {rounded}"


@dataclass(frozen=True)
class Setting:
    """One generation setting as the user meets it."""

    flag: str  # the command-line flag; its name without dashes (``-`` -> ``_``) is the jobs-file key
    kind: type  # int, float, str or bool
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    cli: bool = True  # an option of `mimic run`/`mimic farm` (False: config and jobs-file key only)
    normalise: Callable[[Any], tuple[Any, str | None]] | None = None  # value -> (value, warning or None)
    aliases: tuple[str, ...] = ()  # further jobs-file/config keys (upstream's names, earlier names)
    unset: str = ""  # the default is None: what None means, for help texts ("the motion's fps")

    @property
    def key(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def negative_flag(self) -> str:
        """``--no-draw-hands`` for a bool setting's ``--draw-hands``."""
        return "--no-" + self.flag.removeprefix("--")

    def check(self, value) -> None:
        """Type and range (or choice), with the user's flag in the message (InputError)."""
        if value is None and self.unset:
            return
        if self.kind is bool:
            if not isinstance(value, bool):
                raise InputError(f"{self.flag} must be true or false, got {_shown(value)}")
            return
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise InputError(f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}")
            return
        if self.kind is int:
            ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
        else:
            ok, what = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), "a number"
        if not ok:
            raise InputError(f"{self.flag} must be {what}, got {_shown(value)}")
        if not self.lo <= value <= self.hi:
            span = f"{self.lo}..{self.hi}" if self.kind is int else f"{self.lo:g}..{self.hi:g}"
            raise InputError(f"{self.flag} must be in {span}, got {_shown(value)}")

    def range_text(self) -> str:
        """``[range: 1..1000]`` / ``[choices: a, b]`` for help texts ("" for a switch)."""
        if self.kind is bool:
            return ""
        if self.choices:
            return f"[choices: {', '.join(self.choices)}]"
        if self.hi is not None and self.hi >= 2**31:
            return f"[range: >= {self.lo}]"
        return f"[range: {self.lo}..{self.hi}]" if self.kind is int else f"[range: {self.lo:g}..{self.hi:g}]"


def _shown(value) -> str:
    """A value as the user wrote it (an integer too large for a float is not ``1e+23``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def setting(default, flag: str, kind: type, help: str, lo=None, hi=None, **more) -> Any:
    """A ``GenerationConfig`` field with its :class:`Setting` in the field's metadata."""
    return field(default=default, metadata={"setting": Setting(flag, kind, help, lo, hi, **more)})


# Speed presets: each a named set of sampler settings (GenerationConfig field names), applied before
# the settings given beside it. Chosen by ``mimic bench quality``'s rule (benchmarks/quality_bench.py
# ``speed_choice``, like its ``recommend``): per tier, among the measured variants within the tier's
# UNet FLOP cap (balanced 40 %, fast 20 % of the released sampler's) that lose nothing measurable
# against the ground truth and add no seams, the one closest to the released sampler's output. On the
# toy model (benchmarks/RESULTS.md section 5c): balanced = AYS-10 (40 %, 51.7 dB from the 25-step
# output), fast = AYS-6 with deep-feature caching every other step (17 %, 41.6 dB).
SPEEDS = ("exact", "balanced", "fast")
_SAMPLER_DEFAULTS = {"cache_interval": 1, "cache_depth": 1, "guidance_sigma_min": None, "guidance_sigma_max": None}
SPEED_PRESETS: dict[str, dict[str, Any]] = {
    "exact": {**_SAMPLER_DEFAULTS, "steps": 25, "schedule": "karras"},
    "balanced": {**_SAMPLER_DEFAULTS, "steps": 10, "schedule": "ays"},
    "fast": {**_SAMPLER_DEFAULTS, "steps": 6, "schedule": "ays", "cache_interval": 2},
}


@dataclass(frozen=True)
class GenerationConfig:
    """Defaults are the released 1.1 settings (configs/test.yaml + inference.py's hard-coded values)."""

    resolution: int = setting(576, "--resolution", int, "Short side of the output; rounded to a multiple of 64 (with a warning in the report).",
                              64, 4096, unit="px", normalise=round_resolution)
    window: int = setting(72, "--window", int, "Frames per denoising window (upstream's num_frames; 16 for MimicMotion 1.0 weights).",
                          2, 1024, unit="frames", aliases=("num_frames",))
    overlap: int = setting(6, "--overlap", int, "Window overlap (frames shared by neighbouring windows + 1).", 0, 1023, unit="frames",
                           aliases=("frames_overlap",))
    steps: int = setting(25, "--steps", int, "Denoising steps.", 1, 1000, aliases=("num_inference_steps",))
    schedule: str = setting("karras", "--schedule", str, "Noise schedule: karras (released) or ays (Align Your Steps for SVD).",
                            choices=("karras", "ays"))
    guidance_min: float = setting(2.0, "--guidance-min", float, "Guidance at the first frame of a window.", 0.0, 100.0)
    guidance_max: float = setting(2.0, "--guidance-max", float, "Guidance at the last frame of a window.", 0.0, 100.0)
    # Guidance in a limited interval (Kynkaanniemi et al., NeurIPS 2024): classifier-free guidance only
    # at the steps whose noise level sigma is in [min, max]; the other steps run the conditional half
    # alone (a batch-1 UNet call: half the UNet work of that step). Unset: no bound (the released behaviour).
    guidance_sigma_min: float | None = setting(None, "--guidance-sigma-min", float, "Guidance interval: classifier-free guidance only "
                                               "at steps whose noise level sigma is at least this (SVD's sigmas run from 700 down to "
                                               "0.002); the others run the conditional half alone, half the UNet work.", 0.001, 1000.0,
                                               unset="no lower bound: every step")
    guidance_sigma_max: float | None = setting(None, "--guidance-sigma-max", float, "Guidance interval: classifier-free guidance only "
                                               "at steps whose noise level sigma is at most this; the others run the conditional half "
                                               "alone, half the UNet work.", 0.001, 1000.0, unset="no upper bound: every step")
    # Deep-feature caching (DeepCache, Ma et al., CVPR 2024): adjacent steps have nearly the same deep
    # features, so between full UNet passes a window's steps run only the outer levels around the deep
    # features its last full pass produced. Off by default (interval 1: every step a full pass, as released).
    cache_interval: int = setting(1, "--cache-interval", int, "Deep-feature caching: a full UNet pass every N steps; the steps "
                                  "between run only the UNet's outer level(s) around the deep features of the window's last full "
                                  "pass. 1: off (every step in full, as released).", 1, 1000, unit="steps")
    cache_depth: int = setting(1, "--cache-depth", int, "Deep-feature caching: UNet levels that run on a cached step (1: the "
                               "outermost alone, the cheapest; up to levels - 1; the ONNX and TensorRT graphs are depth 1).", 1, 8)
    # A named combination of the settings above (steps, schedule, caching, guidance interval), chosen
    # from the quality bench (SPEED_PRESETS); settings given beside it win.
    speed: str | None = setting(None, "--speed", str, "Speed preset: exact (the released sampler: 25 Karras steps, CFG at "
                                "every step, no caching), balanced or fast (fewer UNet FLOPs per frame, each with its measured "
                                "quality cost: README, Speed presets); settings given beside it win.", choices=SPEEDS,
                                unset="the preset's own sampler settings")
    fps_cond: int = setting(7, "--fps-cond", int, "Conditioning fps (hard-coded 7 upstream; the added time id is fps_cond - 1).", 1, 255,
                            cli=False)
    motion_bucket_id: int = setting(127, "--motion-bucket-id", int, "SVD motion bucket id (127 upstream).", 0, 1023, cli=False)
    noise_aug_strength: float = setting(0.0, "--noise-aug", float, "Noise augmentation strength of the reference latents.", 0.0, 10.0,
                                        aliases=("noise_aug_strength",))
    decode_chunk: int = setting(8, "--decode-chunk", int, "Frames per temporal-decoder chunk.", 1, 1024, unit="frames")
    sample_stride: int = setting(2, "--sample-stride", int, "Driving-video frame stride (times max(1, int(fps/24))).", 1, 1000)
    output_fps: float | None = setting(None, "--fps", float, "Output frame rate (default: the sampled motion's rate, the driving video's "
                                       "fps / stride, so the output lasts as long as the motion).", 1.0, 240.0, unit="fps",
                                       aliases=("output_fps",), unset="the motion's fps")
    seed: int = setting(42, "--seed", int, "Random seed.", 0, 2**63 - 1)
    # What the ComfyUI MimicMotion nodes offer beyond the released script (their names; the defaults are the released behaviour).
    pose_strength: float = setting(1.0, "--pose-strength", float, "Scale of the pose guidance (the PoseNet output added to the UNet input).",
                                   0.0, 10.0)
    image_embed_strength: float = setting(1.0, "--image-embed-strength", float, "Scale of the reference image's CLIP embedding.", 0.0, 10.0)
    pose_start_percent: float = setting(0.0, "--pose-start-percent", float, "First denoising step with pose guidance, as a fraction of the "
                                        "steps (ComfyUI's percent, 0..1); before it the UNet gets no pose.", 0.0, 1.0)
    pose_end_percent: float = setting(1.0, "--pose-end-percent", float, "Last denoising step with pose guidance, as a fraction of the steps "
                                      "(0..1); after it the UNet gets no pose.", 0.0, 1.0)
    draw_body: bool = setting(True, "--draw-body", bool, "Draw the body in the pose images the model sees.", aliases=("include_body",))
    draw_hands: bool = setting(True, "--draw-hands", bool, "Draw the hands in the pose images the model sees.", aliases=("include_hand",))
    draw_face: bool = setting(True, "--draw-face", bool, "Draw the face in the pose images the model sees.", aliases=("include_face",))

    def __post_init__(self) -> None:
        for f in fields(self):
            SETTINGS[f.name].check(getattr(self, f.name))
        checks = [
            (self.resolution % 64 == 0, f"--resolution must be a positive multiple of 64, got {self.resolution}"),
            (self.overlap < self.window, f"--overlap must be smaller than --window ({self.window}), got {self.overlap}"),
            (self.guidance_max > 1.0, f"--guidance-max must be > 1 (classifier-free guidance), got {self.guidance_max:g}"),
            (self.pose_start_percent <= self.pose_end_percent,
             f"--pose-start-percent ({self.pose_start_percent:g}) must not be after --pose-end-percent ({self.pose_end_percent:g})"),
            (self.guidance_sigma_min is None or self.guidance_sigma_max is None or self.guidance_sigma_min <= self.guidance_sigma_max,
             f"--guidance-sigma-min ({self.guidance_sigma_min:g}) must not be above --guidance-sigma-max ({self.guidance_sigma_max:g})"
             if self.guidance_sigma_min is not None and self.guidance_sigma_max is not None else ""),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(msg)

    def with_overrides(self, **overrides) -> "GenerationConfig":
        """This config with ``overrides`` (field names) applied; values are checked, not normalised
        (normalise first with :func:`normalise_settings`)."""
        unknown = sorted(set(overrides) - set(SETTINGS))
        if unknown:
            raise InputError(f"unknown settings {unknown}; known: {sorted(SETTINGS)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        speed = given.get("speed")
        if speed is not None:  # the preset first (it may unset a bound), then what was given beside it
            SETTINGS["speed"].check(speed)
            given = {**SPEED_PRESETS[speed], **given}
        return replace(self, **given)

    def to_dict(self) -> dict:
        return asdict(self)

    def fps_for(self, motion_fps: float | None) -> float:
        """The output frame rate: ``--fps`` when given, else the sampled motion's rate (so the output
        lasts as long as the motion), else (drawn pose frames with no rate) the released 15 fps."""
        if self.output_fps is not None:
            return float(self.output_fps)
        return float(motion_fps) if motion_fps else RELEASED_FPS

    def pose_steps(self) -> tuple[int, int]:
        """(first, last) denoising step index (0-based, both included) that gets the pose latents:
        ``round(steps * percent)`` for each end, as the ComfyUI wrapper counts them; (0, steps) by default."""
        return round(self.steps * self.pose_start_percent), round(self.steps * self.pose_end_percent)


RELEASED_FPS = 15.0  # configs/test.yaml's fps: the output rate when the motion has none (drawn pose frames)
SETTINGS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(GenerationConfig)}
RELEASED: dict[str, Any] = {f.name: f.default for f in fields(GenerationConfig) if f.default is not MISSING}
# Settings given together by one key: `--guidance G` (and upstream's `guidance_scale`) set both ends of the ramp.
COMPOSITES: dict[str, tuple[str, ...]] = {"guidance": ("guidance_min", "guidance_max")}
COMPOSITE_HELP = {"guidance": "Constant guidance (sets --guidance-min and --guidance-max)."}
COMPOSITE_ALIASES = {"guidance_scale": "guidance"}
# Every key a settings mapping (jobs file, --config) may use -> the field(s) it sets.
SETTING_KEYS: dict[str, tuple[str, ...]] = {
    **{key: (name,) for name, s in SETTINGS.items() for key in (name, s.key, *s.aliases)},
    **{key: names for key, names in COMPOSITES.items()},
    **{alias: COMPOSITES[target] for alias, target in COMPOSITE_ALIASES.items()},
}
FLAGS = {name: s.flag for name, s in SETTINGS.items()}


def flag(name: str) -> str:
    """``--fps`` for ``output_fps``."""
    return SETTINGS[name].flag if name in SETTINGS else name


def check_setting(name: str, value) -> None:
    """Type and range of one setting (a field name), with the user's flag in the message (InputError)."""
    if name not in SETTINGS:
        raise InputError(f"unknown setting {name!r}{did_you_mean(name, SETTING_KEYS)}")
    SETTINGS[name].check(value)


def did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def settings_from_mapping(data: Mapping[str, Any], where: str = "", name_key: bool = False) -> tuple[dict, list[str]]:
    """Keys of a jobs-file entry or a settings file (the CLI's words, field names, upstream's
    names) -> (checked and normalised field overrides, warnings). Unknown keys and bad values are one
    InputError naming the flag (``where``: a prefix such as ``jobs.yaml: job 2: ``; ``name_key``:
    the key too, as a settings file written in upstream's names needs)."""
    overrides: dict = {}
    for key, value in data.items():
        names = SETTING_KEYS.get(key)
        if names is None:
            raise InputError(f"{where}unknown setting {key!r}{did_you_mean(key, SETTING_KEYS)}")
        composite = COMPOSITE_ALIASES.get(key, key) if len(names) > 1 else None
        for name in names:
            try:
                SETTINGS[name].check(value)
            except InputError as err:  # a composite is named as its own flag (--guidance), not one of its parts
                text = str(err).replace(SETTINGS[name].flag, f"--{composite}") if composite else str(err)
                raise InputError(f"{where}{f'{key}: ' if name_key else ''}{text}") from None
            overrides[name] = value
    return normalise_settings(overrides)


def normalise_settings(overrides: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """Apply each setting's normalisation (``--resolution`` rounding): (overrides, warnings)."""
    out, warnings = dict(overrides), []
    for name, value in overrides.items():
        norm = SETTINGS[name].normalise if name in SETTINGS else None
        if norm is not None and value is not None:
            out[name], warning = norm(value)
            if warning:
                warnings.append(warning)
    return out, warnings
