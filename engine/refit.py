"""Refittable UNet engines: swap MimicMotion checkpoints (1.0 <-> 1.1) without a rebuild.

Two modes, both through the one builder code path (``engine/builder.py``):

- ``swap`` (``BuildOptions(refittable=True)`` -> ``BuilderFlag.REFIT``): the engine accepts *other*
  weights of the same graph. This is what a checkpoint swap needs: ``REFIT_IDENTICAL`` promises
  TensorRT that refit weights equal the build weights, and refitting different values under it is
  undefined behaviour.
- ``weightless`` (``BuildOptions(strip_plan=True)`` -> ``STRIP_PLAN`` + ``REFIT_IDENTICAL``): a small
  plan whose weights are refit at load time from the *same* ONNX it was built from. Same performance
  as a non-refittable engine; not a way to change checkpoints.

Known issue (TensorRT 11.3.0, "Refitting an Engine" page): with ``REFIT`` an engine may compute
wrong results even before any refit (a GEMM bias can be dropped and treated as zero);
``REFIT_IDENTICAL`` does not reproduce it. Hence: default builds are not refittable; a ``swap``
engine is only published after :func:`compare_with_fresh_build` agrees with a freshly built
non-refittable engine of the same weights (GPU), and the manifest records that check.

Weights come either from the new checkpoint's exported ONNX (``OnnxParserRefitter``: robust, names
and constant folding match the build) or from a state dict (``Refitter.set_named_weights``; names
are the checkpoint's ``unet.`` keys, which the exporter keeps as ONNX initializer names).

The UNet's weights live in three engines: ``unet`` and deep-feature caching's ``unet_features`` /
``unet_shallow`` (:data:`UNET_WEIGHT_STAGES`; the shallow graph holds a subset of the same named
weights). ``--refittable`` builds all three refittable and ``mimic refit-unet`` refits every one
the folder has, each from its own graph exported from the new checkpoint, so a job never mixes
checkpoints between its full and its cached steps.

Everything that deserializes or refits needs a GPU: the functions probe first.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mimic.engine.builder import BuildOptions, build_serialized_engine
from mimic.engine.cache_key import cache_key, onnx_fingerprint
from mimic.engine.gpu import require_gpu
from mimic.engine.runner import deserialize_engine, make_logger, open_engine
from mimic.engine.store import EngineStore
from mimic.errors import EngineError
from mimic.spec import CACHE_STAGES, StageName

log = logging.getLogger(__name__)

UNET_WEIGHT_STAGES = (StageName.UNET, *CACHE_STAGES)  # the engines that carry the UNet's weights

REFIT_MODES = ("swap", "weightless")
REFIT_KNOWN_ISSUE = (
    "TensorRT 11.3.0 known issue: a REFIT engine may drop a GEMM bias even without a refit "
    "(REFIT_IDENTICAL is unaffected); swapped engines are verified against a fresh build before use"
)


def refit_build_options(base: BuildOptions, mode: str) -> BuildOptions:
    """``base`` with the flags of ``mode`` (``swap`` -> REFIT; ``weightless`` -> STRIP_PLAN + REFIT_IDENTICAL)."""
    if mode == "swap":
        return dataclasses.replace(base, refittable=True, strip_plan=False)
    if mode == "weightless":
        return dataclasses.replace(base, refittable=False, strip_plan=True)
    raise EngineError(f"unknown refit mode {mode!r}; choose one of: {', '.join(REFIT_MODES)}")


def _refit_errors(refitter) -> str:
    try:
        missing = list(refitter.get_missing_weights())
    except Exception:
        missing = []
    if not missing:
        return ""
    shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
    return f"; weights missing: {shown}"


def refit_from_onnx(trt: Any, engine: Any, onnx_path: str | Path, logger: Any = None) -> None:
    """Refit ``engine`` in place with every initializer of ``onnx_path`` (external data included)."""
    if not getattr(engine, "refittable", True):
        raise EngineError("this engine was not built refittable; rebuild with `mimic build-engines --refittable`")
    logger = logger or make_logger(trt)
    refitter = trt.Refitter(engine, logger)
    parser_refitter = trt.OnnxParserRefitter(refitter, logger)
    if not parser_refitter.refit_from_file(str(onnx_path)):
        detail = "; ".join(getattr(logger, "errors", [])[-3:]) or "the graph does not match the engine"
        raise EngineError(f"cannot refit from {onnx_path}: {detail}")
    if not refitter.refit_cuda_engine():
        raise EngineError(f"TensorRT refit from {onnx_path} failed{_refit_errors(refitter)}")


def refit_from_weights(trt: Any, engine: Any, weights: Mapping[str, Any], logger: Any = None) -> list[str]:
    """Refit ``engine`` from named arrays (numpy/torch); returns the names that were set.

    Arrays are cast to each weight's prototype dtype and kept alive until the refit completes.
    """
    logger = logger or make_logger(trt)
    refitter = trt.Refitter(engine, logger)
    keep, used = [], []
    for name in refitter.get_all_weights():
        if name not in weights:
            continue
        proto = refitter.get_weights_prototype(name)
        arr = weights[name]
        arr = arr.detach().cpu().numpy() if hasattr(arr, "detach") else np.asarray(arr)
        arr = np.ascontiguousarray(arr.astype(trt.nptype(proto.dtype), copy=False))
        if arr.size != proto.size:
            raise EngineError(f"refit weight {name}: {arr.size} values, the engine expects {proto.size}")
        keep.append(arr)
        if not refitter.set_named_weights(name, trt.Weights(arr)):
            raise EngineError(f"TensorRT rejected refit weight {name}")
        used.append(name)
    if not refitter.refit_cuda_engine():
        raise EngineError(f"TensorRT refit failed{_refit_errors(refitter)}; refit from the new checkpoint's ONNX instead")
    del keep
    return used


def unet_weights_from_checkpoint(checkpoint: str | Path, prefix: str = "unet.") -> dict[str, np.ndarray]:
    """The UNet part of a MimicMotion checkpoint as fp16 arrays named like the ONNX initializers."""
    import torch

    path = Path(checkpoint)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    out = {k[len(prefix):]: v.to(torch.float16).numpy() for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise EngineError(f"{path} has no '{prefix}' weights")
    return out


def load_engine(store: EngineStore, stage: str, device_index: int = 0):
    """``(trt, runtime, engine, manifest)`` of a published engine, after the store's checks (GPU)."""
    require_gpu(f"refitting engine '{stage}'")
    manifest = store.read_manifest(stage)
    if manifest is None:
        raise EngineError(f"no engine for stage '{stage}' in {store.root}; build it with `mimic build-engines --refittable --out {store.root}`")
    opened = open_engine(store, stage, device_index)
    return opened.trt, opened.runtime, opened.engine, opened.manifest


def options_from_manifest(manifest: Mapping[str, Any], **override) -> BuildOptions:
    opts = dict(manifest["key_inputs"]["build"]["options"])
    fields = {f.name for f in dataclasses.fields(BuildOptions)}
    kwargs = {k: v for k, v in opts.items() if k in fields}
    if "compute_capabilities" in kwargs:
        kwargs["compute_capabilities"] = tuple(kwargs["compute_capabilities"])
    kwargs.update(override)
    return BuildOptions(**kwargs)


def compare_with_fresh_build(
    trt: Any,
    refitted: Any,
    onnx_path: str | Path,
    manifest: Mapping[str, Any],
    stage: str = StageName.UNET,
    seed: int = 0,
) -> float:
    """Max relative error between ``refitted`` and a fresh non-refittable build of ``onnx_path``
    at the profile's opt shape (GPU). Catches the TensorRT 11.3 REFIT known issue."""
    import torch

    from mimic.engine.runner import SharedDeviceMemory, TrtRunner
    from mimic.engine.validate import random_feeds

    require_gpu("verifying a refitted engine")
    profiles = [{n: (s["min"], s["opt"], s["max"]) for n, s in p.items()} for p in manifest["key_inputs"]["build"]["profiles"]]
    profile = profiles[0] if profiles else None  # one profile per engine
    fresh_plan = build_serialized_engine(onnx_path, profile, options_from_manifest(manifest, refittable=False, strip_plan=False, timing_cache=None))
    runtime, fresh = deserialize_engine(trt, fresh_plan, f"fresh {stage} build")
    memory = SharedDeviceMemory("cuda")
    a = TrtRunner(stage, refitted, trt, memory)
    b = TrtRunner(stage, fresh, trt, memory, keepalive=runtime)
    feeds = random_feeds(stage, manifest, "opt", seed, {i.name: i.dtype for i in a.inputs})
    feeds = {k: v.cuda() for k, v in feeds.items()}
    out_a, out_b = a.run(feeds), b.run(feeds)
    torch.cuda.synchronize()
    worst = 0.0
    for name in out_b:
        x, y = out_a[name].double(), out_b[name].double()
        if not bool(torch.isfinite(x).all()):
            return float("inf")
        scale = float(y.abs().max()) or 1.0
        worst = max(worst, float((x - y).abs().max()) / scale)
    a.close()
    b.close()
    memory.free()
    return worst


def swap_weights(
    store_dir: str | Path,
    new_onnx: str | Path,
    stage: str = StageName.UNET,
    verify: bool = True,
    max_rel: float = 1e-2,
) -> dict:
    """Refit the published refittable ``stage`` with the weights of ``new_onnx`` (the same graph
    exported from another checkpoint), check it against a fresh build, and publish it under the
    new weights' cache key. Returns the new manifest. GPU only."""
    store = EngineStore(store_dir)
    trt, runtime, engine, manifest = load_engine(store, stage)
    options = manifest["key_inputs"]["build"]["options"]
    if not options.get("refittable"):
        raise EngineError(f"engine '{stage}' in {store.root} is not refittable (built without --refittable); "
                          "rebuild it with `mimic build-engines --refittable` or build for the new weights")
    log.info(f"  {stage}: refit from {Path(new_onnx).name} ({REFIT_KNOWN_ISSUE})")
    t0 = time.perf_counter()
    refit_from_onnx(trt, engine, new_onnx)
    seconds = time.perf_counter() - t0
    rel = None
    if verify:
        rel = compare_with_fresh_build(trt, engine, new_onnx, manifest, stage)
        log.info(f"  {stage}: refitted vs fresh build: max relative error {rel:.2e}")
        if not rel <= max_rel:
            raise EngineError(f"refitted engine '{stage}' differs from a fresh build (relative error {rel:.2e} > {max_rel:.0e}); "
                              "this is the TensorRT REFIT known issue: rebuild for the new weights instead of refitting")
    plan = bytes(memoryview(engine.serialize()))
    fp = onnx_fingerprint(new_onnx)
    key_in = manifest["key_inputs"]
    key, inputs = cache_key(stage, fp, key_in["build"], key_in["tensorrt"], key_in["gpu"])
    onnx_info = dict(manifest.get("onnx") or {})
    onnx_info.update({"path": str(Path(new_onnx).resolve()), "sha256": fp["sha256"], "files": fp["files"]})
    return store.publish(stage, plan, key, inputs, onnx=onnx_info, build_seconds=seconds, io=manifest.get("io"),
                         extra={"refit": {"from_cache_key": manifest["cache_key"], "verified_max_rel": rel, "note": REFIT_KNOWN_ISSUE}})
