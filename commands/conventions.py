"""The command line's conventions, in one place (README: "CLI conventions").

* Choices come from their single sources of truth: stage names from ``mimic.spec``, TensorRT
  targets from ``mimic.engine.gpu``, backends from ``mimic.runtime.backend_api.BACKENDS``, presets
  from ``mimic.model.presets.PRESET_NAMES`` (all torch-free: ``mimic --help`` imports them).
* Sizes are ``WIDTHxHEIGHT`` (as video players and the README say: ``1024x576`` is landscape).
* ``--device`` is ``cpu`` or ``cuda[:N]``, default ``cpu`` everywhere (a GPU is asked for).
* Ranges read ``[range: LO..HI]`` (or ``[range: >= LO]``) in every help text.
* Every value has a label that says what to type: choices as ``a|b``, free text as ``METAVARS``
  names it (``commands/cli_help.py`` applies it to any option without a metavar of its own).
"""
from __future__ import annotations

from mimic.errors import InputError
from mimic.model.presets import PRESET_NAMES as PRESETS
from mimic.runtime.backend_api import BACKENDS  # noqa: F401  (re-exported: the CLI lists backends from here)
from mimic.spec import ALL_STAGES, STAGE_NAMES

EXPORT_STAGES = STAGE_NAMES  # the PyTorch stages (deep-feature caching's unet_features and unet_shallow included)
ENGINE_STAGES = tuple(ALL_STAGES)  # plus the two DWPose models


def choices(values) -> str:
    """``a|b|c``: the metavar of an option that takes one of ``values``."""
    return "|".join(values)


def targets() -> tuple[str, ...]:
    from mimic.engine.gpu import TARGETS

    return tuple(TARGETS)


def in_range(lo, hi=None) -> str:
    if lo is None:
        return f"[range: <= {hi}]"
    return f"[range: {lo}..{hi}]" if hi is not None else f"[range: >= {lo}]"


PRESET_HELP = f"Built-in weights ({', '.join(PRESETS)})."
DEVICE_METAVAR = "cpu|cuda[:N]"
# `mimic demo`: its presets (the trained toy first: the default) and the backends it runs on the CPU.
DEMO_PRESETS = ("toy", "tiny")
DEMO_BACKENDS = tuple(b for b in BACKENDS if b != "tensorrt")  # no engines to build for a demo
# Labels of free-text options that name none themselves (``--FLAG`` or ``COMMAND --FLAG``); any
# other free-text option is labelled with its name in capitals (``--args`` -> ``ARGS``).
METAVARS = {
    "--svd": "DIR|HUB_ID",
    "--address": "auto|HOST:PORT",
    "--scaling-frames": "N,N,...",
    "--args": "'OPTIONS'",
    "workers --device": DEVICE_METAVAR + ",...",
}
DEVICE_HELP = "Device to run on (cpu unless a GPU is asked for)."


def check_device(value: str, flag: str = "--device") -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (one device)."""
    kind, _, index = str(value).partition(":")
    if value == "cpu" or (kind == "cuda" and (not index or index.isdigit())):
        return value
    raise InputError(f"{flag}: unknown device {value!r}; use cpu or cuda[:N]")


def check_range(flag: str, value, lo, hi=None):
    if value is not None and (value < lo or (hi is not None and value > hi)):
        span = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise InputError(f"{flag} must be {span}, got {value}")
    return value


def parse_size(text: str | None, flag: str) -> tuple[int, int] | None:
    """``WIDTHxHEIGHT`` (or a shape preset name such as ``landscape-576``), multiples of 64 ->
    (height, width)."""
    if text is None:
        return None
    from mimic.engine.build import shape_hw

    try:
        return shape_hw(text)
    except InputError as err:
        raise InputError(f"{flag}: {err}") from None


