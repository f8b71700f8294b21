"""Engines from the 8-bit Q/DQ UNet (``mimic quantize``), standalone from ``engine/build.py``.

TensorRT 11 and TensorRT-RTX are strongly typed: the FP8/INT8 precision is the Q/DQ nodes of the
graph (``mimic.export.qdq``, fp16 body), and nothing here sets a precision flag (none exists). The
build goes through the one builder (``engine/builder.py``) with the UNet's profile from the spec.

Targets, measured with TensorRT-RTX 1.7.1 building ahead of time on a CPU (no GPU; 2026-12-06):

* FP8 builds for compute capability 8.9 (Ada) and 12.0 (Blackwell RTX), one plan for both; for 8.6
  it refuses, exactly: "Myelin ([pass.cpp:1500: run_passes] Cannot compile for target(s) sm86,
  because the model contains HW-specific datatypes: fp8_e4m3 ...)" (FP8 tensor cores start at 8.9).
  :func:`check_quant_targets` says so before any work.
* INT8 builds for 8.9 + 12.0 and for 8.6 too (68 "Converting conv ... scales to fp32" warnings: the
  fp16-body graph carries fp16 scales, TensorRT widens them).
* TensorRT-RTX has no SM 9.0 target (no H100/H200 plans); full TensorRT 11 builds on the GPU it
  runs on, FP8 from compute capability 8.9 (NVIDIA's SVD demo asks for 9.0).

Builder optimisation level 4 by default, as NVIDIA's demo uses for 8-bit UNets.

``build-engines --precision fp8|int8`` integration (engine/build.py is not this module's): the UNet
stage builds from ``qdq_onnx(quant_dir, precision)`` instead of the fp16 export, with
``quant_build_spec_extra`` merged into ``cache_key.build_spec(..., extra=...)`` (the key then holds
the precision and the calibration) and ``quant_manifest_fields`` added to the engine manifest.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from mimic.errors import EngineError, InputError
from mimic.spec import UNET, ModelDims, engine_profile

log = logging.getLogger(__name__)

QUANT_SMS = ("8.9", "12.0")  # TensorRT-RTX targets with FP8 tensor cores (Ada, Blackwell RTX)
FP8_MIN_SM = (8, 9)
QUANT_OPTIMIZATION_LEVEL = 4


def _sm(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def check_quant_targets(precision: str, target: str, sms: Sequence[str]) -> None:
    """InputError for an 8-bit build a target cannot run: FP8 below compute capability 8.9."""
    from mimic.model.quantize import check_precision

    check_precision(precision)
    if precision == "fp8" and target == "tensorrt-rtx":
        low = [s for s in sms if _sm(s) < FP8_MIN_SM]
        if low:
            raise InputError(f"--compute-capability {', '.join(low)}: FP8 needs compute capability 8.9 or newer "
                             f"(TensorRT-RTX refuses: the model contains HW-specific datatypes: fp8_e4m3); use {', '.join(QUANT_SMS)} or --precision int8")


def qdq_onnx(quant_dir: Path, precision: str) -> Path:
    """The engine graph (fp16 body) ``mimic quantize --out QUANT_DIR`` wrote for ``precision``."""
    from mimic.export.qdq import qdq_filename

    path = Path(quant_dir) / qdq_filename(precision)
    if not path.is_file():
        raise InputError(f"no {precision} Q/DQ UNet graph at {path}: run `mimic quantize --precision {precision} --out {quant_dir}` first")
    return path


def quant_manifest_fields(quant_dir: Path, precision: str) -> dict:
    """What the engine's manifest records about its quantization: precision, recipe, calibration set,
    the ModelOpt state's hash and the versions that made it (from ``quant_manifest.json``)."""
    from mimic.export.freshness import sha256_file
    from mimic.model.quantize import STATE_FILE, read_manifest

    qdir = Path(quant_dir) / precision
    manifest = read_manifest(qdir)
    if manifest.get("precision") != precision:
        raise InputError(f"{qdir} holds a {manifest.get('precision')} quantization, not {precision}")
    state = qdir / manifest.get("state_file", STATE_FILE)
    return {
        "precision": precision,
        "recipe": manifest.get("recipe"),
        "calibration": manifest.get("calibration"),
        "weights": manifest.get("weights"),
        "state_sha256": sha256_file(state) if state.is_file() else None,
        "modelopt": (manifest.get("versions") or {}).get("nvidia-modelopt"),
    }


def quant_build_spec_extra(fields: Mapping) -> dict:
    """The ``extra`` for ``cache_key.build_spec``: the precision contract (fp16 graph + 8-bit Q/DQ,
    strongly typed) and the quantization that made the graph (its calibration included)."""
    return {"precision": {"onnx": "fp16", "qdq": fields["precision"], "typing": "strong"},
            "quantization": {k: fields[k] for k in ("precision", "recipe", "calibration", "state_sha256")}}


@dataclass(frozen=True)
class QuantEngine:
    precision: str
    target: str
    compute_capabilities: tuple[str, ...]
    plan: bytes
    seconds: float
    profile: dict


def build_quantized_unet(onnx_path: Path, precision: str, dims: ModelDims, *, profile_set: str | None = None, window: int | None = None,
                         hw_sizes: Sequence[tuple[int, int]] = (), target: str = "tensorrt-rtx", compute_capabilities: Sequence[str] = QUANT_SMS,
                         optimization_level: int = QUANT_OPTIMIZATION_LEVEL, workspace_bytes: int | None = None,
                         check: bool = True) -> QuantEngine:
    """Build the Q/DQ UNet at ``onnx_path`` (strongly typed) with the UNet's engine profile; EngineError
    with TensorRT's own message when it refuses (``check=False``: no early refusal of FP8 below 8.9,
    TensorRT gets to say it)."""
    from mimic.engine.builder import BuildOptions, build_serialized_engine

    sms = tuple(compute_capabilities) if target == "tensorrt-rtx" else ()
    if check:
        check_quant_targets(precision, target, sms)
    profile = engine_profile(UNET, dims, profile_set, window, hw_sizes)
    options = BuildOptions(target=target, optimization_level=optimization_level, compute_capabilities=sms, workspace_bytes=workspace_bytes)
    t0 = time.perf_counter()
    plan = build_serialized_engine(onnx_path, profile, options)
    seconds = time.perf_counter() - t0
    log.info(f"  {UNET.name} {precision}: {len(plan) / 1e6:.1f} MB plan for {', '.join(sms) or 'this GPU'} in {seconds:.1f} s")
    return QuantEngine(precision, target, sms, plan, seconds, {k: [list(s) for s in v] for k, v in (profile or {}).items()})


def try_targets(onnx_path: Path, precision: str, dims: ModelDims, sms_sets: Sequence[Sequence[str]], **kw) -> list[dict]:
    """Build once per set of compute capabilities and record each result: the plan size and seconds,
    or TensorRT's exact refusal (the measurement behind this module's docstring)."""
    out = []
    for sms in sms_sets:
        try:
            engine = build_quantized_unet(onnx_path, precision, dims, compute_capabilities=tuple(sms), check=False, **kw)
            out.append({"compute_capabilities": list(sms), "built": True, "plan_bytes": len(engine.plan), "seconds": engine.seconds})
        except EngineError as err:
            out.append({"compute_capabilities": list(sms), "built": False, "refusal": str(err)})
    return out
