"""The nodes' setting inputs, derived from ``mimic.model.config.SETTINGS`` (every generation setting
declared once): names, types, ranges, help and defaults come from there, so a setting added there
appears on the nodes without an edit here. Only the names differ: where kijai's
ComfyUI-MimicMotionWrapper has a name for the same thing, the node uses it (``WRAPPER_NAMES``), so
a wrapper workflow maps over input by input; every other input is the setting's field name.

Which node shows a setting: the drawing switches (``draw_*``) and ``resolution`` go to the pose node
(it draws the poses at the output size); the sampler shows every other setting except
``sample_stride`` (it picks frames of a driving video; a ComfyUI video loader selects frames itself).
The settings are optional inputs: ComfyUI shows each as a widget with the released default, and a
prompt that leaves one out (API format) gets the loaded model's default (its preset's).
"""
from __future__ import annotations

from typing import Any, Mapping

WRAPPER_NAMES = {
    "guidance_min": "cfg_min",
    "guidance_max": "cfg_max",
    "window": "context_size",
    "overlap": "context_overlap",
    "output_fps": "fps",
    "decode_chunk": "decode_chunk_size",
    "draw_body": "include_body",
    "draw_hands": "include_hand",
    "draw_face": "include_face",
}
COMPOSITE_NAMES = {"--guidance": "cfg_min/cfg_max"}  # a composite flag some messages name
NOT_ON_SAMPLER = ("sample_stride",)
FLOAT_STEP = 0.01


def _settings():
    from mimic.model.config import SETTINGS  # looked up on each call: settings added later show up

    return SETTINGS


def _released() -> Mapping[str, Any]:
    from mimic.model.config import RELEASED

    return RELEASED


def input_name(field: str) -> str:
    return WRAPPER_NAMES.get(field, field)


def is_drawing(field: str) -> bool:
    return field.startswith("draw_")


def sampler_fields() -> list[str]:
    return [f for f in _settings() if not is_drawing(f) and f not in NOT_ON_SAMPLER]


def pose_fields() -> list[str]:
    return [f for f in _settings() if f == "resolution" or is_drawing(f)]


UNSET_CHOICE = "none"  # a choice setting's "not set" entry (``speed``: the widgets' own sampler settings)


def unset_sentinel(setting) -> float | int | str | None:
    """The widget value meaning "not set" for a setting whose default is None (``--fps``: the
    motion's rate): 0, below its range; ``"none"`` for a choice (``--speed``). None for settings
    that are always set."""
    if not getattr(setting, "unset", ""):
        return None
    if setting.choices:
        return UNSET_CHOICE
    if setting.kind not in (int, float) or setting.lo is None or setting.lo <= 0:
        raise ValueError(f"setting {setting.flag}: an unset value needs a numeric range above 0 for the widget's 0")
    return 0


def widget(field: str, default=None) -> tuple:
    """One setting as a ComfyUI input declaration ``(TYPE, options)``."""
    s = _settings()[field]
    default = _released().get(field) if default is None else default
    tooltip = f"{s.help} ({f'{s.flag} of `mimic run`' if s.cli else f'`{s.key}` in a jobs file'})"
    if s.kind is bool:
        return ("BOOLEAN", {"default": bool(default), "tooltip": tooltip})
    sentinel = unset_sentinel(s)
    if s.choices:
        if sentinel is None:
            return (list(s.choices), {"default": default, "tooltip": tooltip})
        return ([sentinel, *s.choices], {"default": sentinel if default is None else default,
                                         "tooltip": tooltip + f"; {sentinel}: not set ({s.unset}); a preset replaces the widgets it sets"})
    lo = s.lo if sentinel is None else sentinel
    if default is None:
        default = sentinel
    if sentinel is not None:
        tooltip += f"; 0: not set ({s.unset})"
    if s.kind is int:
        return ("INT", {"default": int(default), "min": int(lo), "max": int(s.hi), "step": 1, "tooltip": tooltip})
    return ("FLOAT", {"default": float(default), "min": float(lo), "max": float(s.hi), "step": FLOAT_STEP, "tooltip": tooltip})


def widgets(fields: list[str]) -> dict[str, tuple]:
    return {input_name(f): widget(f) for f in fields}


def overrides(fields: list[str], values: Mapping[str, Any]) -> dict[str, Any]:
    """The node's widget values -> setting overrides by field name (left-out inputs: not set; the
    unset sentinel: None; numbers as the setting's type, as ComfyUI's validation converts them)."""
    settings, out = _settings(), {}
    for field in fields:
        name = input_name(field)
        if name not in values:
            continue
        s, value = settings[field], values[name]
        sentinel = unset_sentinel(s)
        if sentinel is not None and value == sentinel:
            out[field] = None
            continue
        if s.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[field] = value
    if out.get("speed") is not None:  # every widget is always sent: a chosen preset replaces the sampler widgets it sets
        from mimic.model.config import SPEED_PRESETS

        out = {k: v for k, v in out.items() if k not in SPEED_PRESETS[out["speed"]]}
    return out


def flag_names() -> dict[str, str]:
    """Command-line flag -> input name, to rename the flags in our messages."""
    names = {s.flag: input_name(f) for f, s in _settings().items()}
    names.update({s.negative_flag: input_name(f) for f, s in _settings().items() if s.kind is bool and hasattr(s, "negative_flag")})
    return {**names, **COMPOSITE_NAMES}
