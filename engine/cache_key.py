"""Engine cache keys: sha256 over canonical JSON (the design notes on reliability, B3; not in this repository).

The key covers everything that changes the plan:

- ``onnx``: the sha256 of the ONNX file *and of every external-data file it references* (by
  relative location, never by absolute path), so a swapped checkpoint under the same file names
  misses the cache;
- ``build``: the profiles (per-input min/opt/max), the precision contract and the builder options
  (optimisation level, workspace cap, refit/strip flags, compute-capability targets);
- ``tensorrt``: flavour (``tensorrt`` / ``tensorrt-rtx``) and full version;
- ``gpu``: the GPU name and compute capability the plan is for.

Canonical JSON = sorted keys, no whitespace, ASCII, no floats-as-ints ambiguity, sets sorted,
enums by *name* (TensorRT renumbered BuilderFlag in 11.0: never persist ints).
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Mapping

from mimic.errors import EngineError
from mimic.export.freshness import sha256_file

# Bump when the meaning of a key field or the export/build contract changes.
SCHEMA_VERSION = 1
# Precision contract shared by every stage: precision lives in the (FP16) ONNX, TensorRT 11 and
# TensorRT-RTX build strongly typed only.
PRECISION = {"onnx": "fp16", "typing": "strong"}
# Options that change build *time* only, never the plan: kept out of the key.
NON_KEY_OPTIONS = frozenset({"timing_cache", "log", "progress", "verbose"})


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _normalize(obj: Any) -> Any:
    """JSON-safe, order-independent form of ``obj``."""
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, Mapping):
        return {str(k): _normalize(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _normalize(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (set, frozenset)):
        return sorted((_normalize(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(obj, (list, tuple)):
        return [_normalize(v) for v in obj]
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"non-finite float {obj!r} in a cache key")
        return int(obj) if obj.is_integer() else obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _normalize(obj.item())
    if hasattr(obj, "name") and type(obj).__module__.startswith(("tensorrt", "torch")):  # TRT pybind enums, torch dtypes
        return str(getattr(obj, "name", obj))
    raise TypeError(f"cannot put {type(obj).__name__} into a cache key")


def canonical_json(obj: Any) -> str:
    return json.dumps(_normalize(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def key_of(inputs: Mapping[str, Any]) -> str:
    """The cache key: sha256 of the canonical JSON of ``inputs``."""
    return hashlib.sha256(canonical_json(inputs).encode("ascii")).hexdigest()


# --------------------------------------------------------------------------------------------- ONNX


def external_data_files(onnx_path: Path) -> list[str]:
    """Relative locations of the external-data files an ONNX model references (sorted, unique)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise EngineError(f"cannot read ONNX model {onnx_path}: {exc}") from None
    locations = {ExternalDataInfo(t).location for t in _get_all_tensors(model) if uses_external_data(t)}
    return sorted(locations)


def onnx_fingerprint(onnx_path: str | Path) -> dict:
    """sha256 of an ONNX model including its external data; independent of where it lives.

    Returns ``{"sha256": <combined>, "files": [{"name", "size", "sha256"}, ...]}`` where the first
    file is the model itself (named by its base name) and the rest its external-data files.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX model not found: {onnx_path}")
    files = [{"name": onnx_path.name, "size": onnx_path.stat().st_size, "sha256": sha256_file(onnx_path)}]
    for loc in external_data_files(onnx_path):
        p = onnx_path.parent / loc
        if not p.is_file():
            raise EngineError(f"ONNX model {onnx_path} references external data {loc!r}, which is missing")
        files.append({"name": loc, "size": p.stat().st_size, "sha256": sha256_file(p)})
    # The model file's own name does not matter (a renamed copy is the same model); locations of
    # external data do (they are part of the graph).
    combined = key_of({"model": files[0]["sha256"], "external_data": [[f["name"], f["sha256"]] for f in files[1:]]})
    return {"sha256": combined, "files": files}


# ------------------------------------------------------------------------------------ build spec


def profiles_dict(profiles: Any) -> list[dict]:
    """Profiles as ``[{input: {"min": [...], "opt": [...], "max": [...]}}]``.

    Accepts a list of mappings ``{input: (min, opt, max)}`` or ``{input: {"min":..,"opt":..,"max":..}}``,
    or objects with those attributes (``.min/.opt/.max``), or a single mapping (one profile), or None
    (a static graph: no profile).
    """
    if profiles is None:
        return []
    if isinstance(profiles, Mapping):
        profiles = [profiles]
    out = []
    for prof in profiles:
        items = prof.items() if isinstance(prof, Mapping) else dict(prof).items()
        entry = {}
        for name, shapes in items:
            if isinstance(shapes, Mapping):
                mn, opt, mx = shapes["min"], shapes["opt"], shapes["max"]
            elif hasattr(shapes, "min") and hasattr(shapes, "max") and not isinstance(shapes, (list, tuple)):
                mn, opt, mx = shapes.min, shapes.opt, shapes.max
            else:
                mn, opt, mx = shapes
            entry[str(name)] = {"min": [int(d) for d in mn], "opt": [int(d) for d in opt], "max": [int(d) for d in mx]}
        out.append(entry)
    return out


def options_dict(options: Any) -> dict:
    """Builder options that change the plan (dataclass or mapping), without build-time-only fields."""
    raw = _normalize(options) if options is not None else {}
    if not isinstance(raw, dict):
        raise TypeError("build options must be a dataclass or a mapping")
    return {k: v for k, v in raw.items() if k not in NON_KEY_OPTIONS}


def build_spec(profiles: Any, options: Any, extra: Mapping[str, Any] | None = None) -> dict:
    spec = {"precision": dict(PRECISION), "profiles": profiles_dict(profiles), "options": options_dict(options)}
    if extra:
        spec.update(_normalize(dict(extra)))
    return spec


# ------------------------------------------------------------------------------------------- key


def gpu_target(flavour: str, gpu: Any = None, rtx_targets: tuple[str, ...] | None = None) -> dict:
    """The GPU part of the key: what the plan is *for*.

    - ``tensorrt``: bound to the building GPU's architecture (and tuned for its model), so name +
      compute capability of that GPU (``gpu`` is a GpuInfo or a mapping with those fields).
    - ``tensorrt-rtx``: ahead-of-time plans are portable across a set of compute capabilities; the
      name is ``"any"`` and the compute capability is the sorted target list.
    """
    if flavour == "tensorrt-rtx":
        from mimic.engine.gpu import RTX_DEFAULT_SMS

        targets = sorted(rtx_targets or RTX_DEFAULT_SMS, key=lambda s: tuple(int(p) for p in s.split(".")))
        return {"name": "any", "compute_capability": targets}
    if gpu is None:
        raise EngineError("a TensorRT (non-RTX) engine is built for the GPU it is built on, and no GPU was found; "
                          "use --target tensorrt-rtx to build ahead of time on a CPU")
    if isinstance(gpu, Mapping):
        return {"name": str(gpu["name"]), "compute_capability": str(gpu["compute_capability"])}
    return {"name": gpu.name, "compute_capability": gpu.compute_capability}


def key_inputs(stage: str, onnx: Mapping[str, Any], spec: Mapping[str, Any], trt: Any, gpu: Mapping[str, Any]) -> dict:
    """Everything the key hashes, in the form stored in the manifest (``trt``: TrtInfo or mapping)."""
    if isinstance(trt, Mapping):
        trt_d = {"flavour": trt["flavour"], "version": trt["version"]}
    else:
        trt_d = {"flavour": trt.flavour, "version": trt.version}
    return {
        "schema": SCHEMA_VERSION,
        "stage": stage,
        "onnx_sha256": onnx["sha256"],
        "build": _normalize(dict(spec)),
        "tensorrt": trt_d,
        "gpu": _normalize(dict(gpu)),
    }


def cache_key(stage: str, onnx: Mapping[str, Any], spec: Mapping[str, Any], trt: Any, gpu: Mapping[str, Any]) -> tuple[str, dict]:
    """``(key, inputs)`` for one stage's engine."""
    inputs = key_inputs(stage, onnx, spec, trt, gpu)
    return key_of(inputs), inputs
