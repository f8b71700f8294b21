"""``mimic validate --engines DIR``: every published engine against onnxruntime on the same ONNX.

For each stage it draws deterministic random inputs at the profile's shape points (min/opt/max,
default opt; realistic value ranges per tensor kind, ``mimic.export.dummy``) plus, when given, real
inputs saved as ``<stage>.pt`` (a dict of tensors), runs the TensorRT engine and onnxruntime on the
ONNX file the manifest names, and compares every output with
:func:`mimic.export.compare.compare_outputs` (the export validation's metrics: max abs error, error
relative to the reference's peak, NaN/Inf count, PSNR for decoded frames). A stage outside its
tolerance (the spec's tolerance for the graph's precision, times ``--tolerance-scale``) makes the
command fail.

Before anything runs, every engine goes through the store's checks (manifest vs the installed
TensorRT, plan size and sha256; the GPU comparison too when there is a GPU): that part works on any
machine (``--check-only``). Engine execution needs a GPU: without one this is a one-line EngineError.
Results go to this module's logger.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from mimic.engine.gpu import require_gpu, runtime_info
from mimic.engine.store import EngineStore, describe_gpu_target
from mimic.errors import EngineError
from mimic.export.compare import FRAMES_PSNR_PEAK, CompareRow, compare_outputs, format_table
from mimic.spec import ALL_STAGES, TensorName, Tolerance

log = logging.getLogger(__name__)

__all__ = ["CompareRow", "check_engines", "format_table", "random_feeds", "tolerance_for", "validate_engines"]

PSNR_OUTPUTS = {TensorName.FRAMES}  # decoded frames in [-1, 1]: PSNR with peak-to-peak 2
# Defaults for stages the specs do not know (a foreign engine in the folder).
DEFAULT_TOL = Tolerance(1e-2, 1e-2)
# The spec tolerances bound |graph - torch fp32| for one fp16 runtime; TensorRT and onnxruntime each
# sit within that of the fp32 model, so their difference is within twice it (triangle inequality).
TOLERANCE_SCALE = 2.0


def tolerance_for(stage: str, precision: str, scale: float = TOLERANCE_SCALE) -> Tolerance:
    """The tolerance between TensorRT and onnxruntime for ``stage``'s graph of ``precision``."""
    spec = ALL_STAGES.get(stage)
    if spec is None:
        return DEFAULT_TOL
    tol = spec.tol_fp16 if precision == "fp16" and spec.tol_fp16 is not None else spec.tol_fp32
    return Tolerance(tol.max_abs * scale, tol.max_rel * scale)


def case_shapes(stage: str, manifest: Mapping, which: str) -> dict[str, tuple[int, ...]]:
    """Input shapes at the ``which`` (min/opt/max) point of the engine's profile; the fixed shapes
    of a static graph (DWPose), which has none."""
    profiles = manifest["key_inputs"]["build"]["profiles"]
    if profiles:
        return {name: tuple(shapes[which]) for name, shapes in profiles[0].items()}
    spec = ALL_STAGES.get(stage)
    if spec is None or spec.dynamic_axes():
        raise EngineError(f"{stage}: the manifest records no optimization profile")
    return {t.name: tuple(int(d) for d in t.dims) for t in spec.inputs}


def random_feeds(stage: str, manifest: Mapping, which: str, seed: int, input_dtypes: Mapping[str, torch.dtype]) -> dict[str, torch.Tensor]:
    """Inputs at the ``which`` (min/opt/max) point of the engine's profile, in realistic ranges."""
    from mimic.export.dummy import draw

    spec = ALL_STAGES.get(stage)
    gen = torch.Generator().manual_seed(seed)
    feeds = {}
    for name, shape in case_shapes(stage, manifest, which).items():
        kind = "normal"
        if spec is not None:
            try:
                kind = spec.tensor(name).kind
            except KeyError:
                pass
        feeds[name] = draw(kind, shape, gen).to(input_dtypes.get(name, torch.float32))
    return feeds


def onnx_path_of(store: EngineStore, stage: str, manifest: Mapping) -> Path:
    onnx = manifest.get("onnx") or {}
    p = onnx.get("path")
    if not p:
        raise EngineError(f"{stage}: the manifest does not name its ONNX file; rebuild with `mimic build-engines`")
    path = Path(p)
    if not path.is_absolute():
        path = store.root / path
    if not path.is_file():
        raise EngineError(f"{stage}: ONNX file {path} named by the manifest is missing; rebuild with `mimic build-engines`")
    return path


def check_engines(engines_dir: str | Path, stages: Iterable[str] | None = None) -> list[str]:
    """Store checks of every engine without deserializing (no GPU needed); logs one line each.

    Raises the first EngineError (corrupt/truncated plan, TensorRT or GPU mismatch, missing manifest).
    """
    store = EngineStore(engines_dir)
    wanted = list(stages) if stages else store.stages()
    if not wanted:
        raise EngineError(f"no engines in {store.root}; build them with `mimic build-engines --out {store.root}`")
    for stage in wanted:
        manifest = store.read_manifest(stage)
        if manifest is None:
            store.verify(stage, runtime_info("tensorrt"))  # raises the "no engine" error
        flavour = manifest["tensorrt"]["flavour"]
        v = store.verify(stage, runtime_info(flavour), require_gpu=False)
        trt = manifest["tensorrt"]
        log.info(f"  {stage:<16} ok  {len(v.plan) / 1e6:8.1f} MB  {trt['flavour']} {trt['version']}  for {describe_gpu_target(manifest['gpu'])}")
    return wanted


def validate_engines(
    engines_dir: str | Path,
    stages: Iterable[str] | None = None,
    points: Iterable[str] = ("opt",),
    inputs_dir: str | Path | None = None,
    seed: int = 0,
    device: str = "cuda",
    tolerance_scale: float = TOLERANCE_SCALE,
) -> list[CompareRow]:
    """Validate engines; logs the table and raises EngineError naming the stages out of tolerance.

    The onnxruntime reference runs on the GPU when onnxruntime has its CUDA provider, else on the CPU
    (a deliberate choice: the reference does not need the GPU, only time)."""
    from mimic.engine.runner import SharedDeviceMemory, TrtRunner, open_engine
    from mimic.ort_session import create_session, cuda_available

    points = list(points)
    for p in points:
        if p not in ("min", "opt", "max"):
            raise EngineError(f"unknown shape point {p!r}; use min, opt or max")
    store = EngineStore(engines_dir)
    wanted = check_engines(store.root, stages)  # corrupt / mismatched engines fail here, GPU or not
    require_gpu("mimic validate (engine execution)")
    dev = torch.device(device)
    dev = torch.device("cuda", dev.index if dev.index is not None else 0)
    ort_device = dev if cuda_available() else "cpu"
    memory = SharedDeviceMemory(dev)
    rows: list[CompareRow] = []
    try:
        for stage in wanted:
            with torch.cuda.device(dev):
                opened = open_engine(store, stage, dev.index)
                runner = TrtRunner(stage, opened.engine, opened.trt, memory, device=dev, keepalive=opened.keepalive)
            try:
                manifest = opened.manifest
                precision = (manifest.get("onnx") or {}).get("precision", "fp16")
                tol = tolerance_for(stage, precision, tolerance_scale)
                sess = create_session(onnx_path_of(store, stage, manifest), ort_device)
                dtypes = {i.name: i.dtype for i in runner.inputs}
                cases = [(p, random_feeds(stage, manifest, p, seed, dtypes)) for p in points]
                if inputs_dir is not None:
                    real = Path(inputs_dir) / f"{stage}.pt"
                    if real.is_file():
                        cases.append(("real", {k: v for k, v in torch.load(real, map_location="cpu").items()}))
                for case, feeds in cases:
                    got = runner.run({k: v.to(dev) for k, v in feeds.items()})
                    torch.cuda.synchronize(dev)
                    ort_in = {m.name: feeds[m.name].to(dtypes.get(m.name, feeds[m.name].dtype)).cpu().numpy() for m in sess.get_inputs()}
                    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, ort_in)))
                    for name, t in got.items():
                        rows.append(compare_outputs(t.float().cpu().numpy(), np.asarray(ref[name]), tol, stage=stage, precision=precision, point=case,
                                                    output=name, psnr_peak=FRAMES_PSNR_PEAK if name in PSNR_OUTPUTS else None))
            finally:
                runner.close()
    finally:
        memory.free()
    log.info(format_table(rows))
    bad = sorted({f"{r.stage} ({r.point}/{r.output})" for r in rows if not r.passed})
    if bad:
        raise EngineError(f"validation failed: {', '.join(bad)} out of tolerance (see the table above)")
    return rows
