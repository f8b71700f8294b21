"""``mimic validate --engines DIR``: every published engine against onnxruntime on the same ONNX.

For each stage it draws deterministic random inputs at the profile's shape points (min/opt/max,
default opt; realistic value ranges per tensor kind, ``mimic.export.dummy``) plus, when given, real
inputs saved as ``<stage>.pt`` (a dict of tensors), and compares the TensorRT engine with
onnxruntime running the ONNX file the manifest names.

The comparison is Polygraphy's (a declared dependency; NVIDIA's tool for exactly this):
``Comparator.run`` drives two Polygraphy runners over the same feeds, ``Comparator.validate``
checks every output for NaN/Inf, and ``Comparator.compare_accuracy`` with a per-output
``SimpleCompareFunc`` decides pass/fail (the spec tolerance of the graph's precision, times
``--tolerance-scale``, as an absolute bound of ``min(max_abs, max_rel x peak)`` on the max error,
which is the spec's pair of bounds for that output). The reference is Polygraphy's
``OnnxrtRunner`` over a session from the project's one factory (``mimic.ort_session``, its CUDA
policy) on the graph with fused attention (``mimic.export.attention``: same maths, no score tensor).
The engine side is :class:`EngineRunner`, a Polygraphy runner around the pipeline's own
:class:`~mimic.engine.runner.TrtRunner`: validating that runner is the point (shared activation
memory, its streams and events; Polygraphy's TrtRunner has none of these, and the GPU tests use it
as an independent second opinion instead). The table (max abs, max rel, NaN/Inf, PSNR for frames)
comes from :func:`mimic.export.compare.compare_outputs`, the export validation's metrics.

Comparison points that do not fit: before a point runs, the onnxruntime reference's need is
estimated by arithmetic (:func:`mimic.export.attention.graph_memory`: weights, the largest
intermediate tensor from ONNX shape inference, score tensors when attention stays unfused) and a
point beyond the memory onnxruntime has (free GPU memory with its CUDA provider, else available
host memory) is skipped with a line saying so; a stage with no point left is an error.

Before anything runs, every engine goes through the store's checks (manifest vs the installed
TensorRT, plan size and sha256; the GPU comparison too when there is a GPU): that part works on any
machine (``--check-only``). Engine execution needs a GPU: without one this is a one-line EngineError.
Results go to this module's logger.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from mimic.engine.gpu import require_gpu, runtime_info
from mimic.engine.store import EngineStore, build_hint, describe_gpu_target
from mimic.errors import EngineError
from mimic.export.compare import FRAMES_PSNR_PEAK, CompareRow, compare_outputs, format_table
from mimic.spec import ALL_STAGES, TensorName, Tolerance

log = logging.getLogger(__name__)

__all__ = ["CompareRow", "EngineRunner", "check_engines", "compare_runners", "fitting_cases", "format_table", "random_feeds", "tolerance_for",
           "validate_engines"]

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
        raise EngineError(f"{stage}: the manifest does not name its ONNX file; {build_hint(store.root, manifest)}")
    path = Path(p)
    if not path.is_absolute():
        path = store.root / path
    if not path.is_file():
        raise EngineError(f"{stage}: ONNX file {path} named by the manifest is missing; {build_hint(store.root, manifest)}")
    return path


def check_engines(engines_dir: str | Path, stages: Iterable[str] | None = None) -> list[str]:
    """Store checks of every engine without deserializing (no GPU needed); logs one line each.

    Raises the first EngineError (corrupt/truncated plan, TensorRT or GPU mismatch, missing manifest).
    """
    store = EngineStore(engines_dir)
    wanted = list(stages) if stages else store.stages() + store.orphan_plans()
    if not wanted:
        raise EngineError(f"no engines in {store.root}; {build_hint(store.root, verb='build them')}")
    for stage in wanted:
        manifest = store.read_manifest(stage)
        if manifest is None:
            store.verify(stage, runtime_info("tensorrt"))  # raises the "no engine" error
        flavour = manifest["tensorrt"]["flavour"]
        v = store.verify(stage, runtime_info(flavour), require_gpu=False)
        trt = manifest["tensorrt"]
        log.info(f"  {stage:<16} ok  {len(v.plan) / 1e6:8.1f} MB  {trt['flavour']} {trt['version']}  for {describe_gpu_target(manifest['gpu'])}")
    return wanted


# ------------------------------------------------------------------------------- Polygraphy side


def _quiet_polygraphy():
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.WARNING  # its failures still print (its report); no INFO chatter


def _engine_runner_base():
    from polygraphy.backend.base import BaseRunner

    return BaseRunner


class EngineRunner:
    """A Polygraphy runner (``BaseRunner``) around the pipeline's :class:`TrtRunner` (or anything
    with ``inputs`` infos and ``run(feeds) -> {name: tensor}``): numpy feeds in, numpy outputs out.
    Created through :func:`engine_runner` so Polygraphy is imported only when used."""


def engine_runner(runner: Any, device: torch.device | str, name: str | None = None):
    BaseRunner = _engine_runner_base()
    dev = torch.device(device)

    class _EngineRunner(BaseRunner, EngineRunner):
        def __init__(self):
            super().__init__(name=name or f"tensorrt:{getattr(runner, 'stage', 'engine')}", prefix="mimic-trt")

        def activate_impl(self):
            pass

        def get_input_metadata_impl(self):
            from polygraphy.common import TensorMetadata

            meta = TensorMetadata()
            for info in runner.inputs:
                meta.add(info.name, dtype=info.dtype, shape=[None if d < 0 else int(d) for d in info.shape])
            return meta

        def infer_impl(self, feed_dict):
            feeds = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dev) for k, v in feed_dict.items()}
            t0 = time.perf_counter()
            out = runner.run(feeds)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            self.inference_time = time.perf_counter() - t0
            return OrderedDict((k, v.detach().float().cpu().numpy()) for k, v in out.items())

        def deactivate_impl(self):
            pass

    return _EngineRunner()


def reference_runner(onnx_path: str | Path, device: Any = "cpu", name: str = "onnxruntime"):
    """Polygraphy's ``OnnxrtRunner`` over a session from the project's factory (CUDA policy)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from mimic.ort_session import create_session

    return OnnxrtRunner(lambda: create_session(onnx_path, device), name=name)


def _simple_compare(atol: dict[str, float]):
    from polygraphy.comparator import compare

    cls = getattr(compare, "SimpleCompareFunc", None)
    kwargs = dict(atol=atol, rtol={k: 0.0 for k in atol}, check_error_stat="max")
    return cls(**kwargs) if cls is not None else compare.CompareFunc.simple(**kwargs)


def _per_output_verdicts(accuracy) -> dict[str, bool]:
    """``{output: passed}`` of the one runner pair and iteration in a Polygraphy accuracy result."""
    from polygraphy.comparator.struct import AccuracyResult

    result = accuracy if isinstance(accuracy, AccuracyResult) else accuracy[0]
    verdicts: dict[str, bool] = {}
    for _pair, iterations in result.items():
        for it in iterations:
            for name, r in it.items():
                verdicts[name] = verdicts.get(name, True) and bool(r)
    return verdicts


def compare_runners(stage: str, precision: str, tol: Tolerance, under_test, reference, cases: Sequence[tuple[str, Mapping[str, np.ndarray]]]) -> list[CompareRow]:
    """Run both Polygraphy runners on each case's feeds and compare them through Polygraphy
    (NaN/Inf validation, per-output tolerances); one table row per output and case."""
    from polygraphy.comparator import Comparator

    _quiet_polygraphy()
    rows: list[CompareRow] = []
    for case, feeds in cases:
        results = Comparator.run([under_test, reference], data_loader=[dict(feeds)])
        finite = bool(Comparator.validate(results, check_inf=True, check_nan=True))
        got, ref = results[0][1][0], results[1][1][0]
        atol = {}
        for name in got.keys():
            r = np.asarray(ref[name], dtype=np.float64)
            peak = float(np.abs(r[np.isfinite(r)]).max()) if np.isfinite(r).any() else 0.0
            atol[name] = min(tol.max_abs, tol.max_rel * peak)
        verdicts = _per_output_verdicts(Comparator.compare_accuracy(results, compare_func=_simple_compare(atol)))
        for name in got.keys():
            row = compare_outputs(np.asarray(got[name]), np.asarray(ref[name]), tol, stage=stage, precision=precision, point=case, output=name,
                                  psnr_peak=FRAMES_PSNR_PEAK if name in PSNR_OUTPUTS else None)
            if row.passed and not (verdicts.get(name, False) and finite):
                row = CompareRow(**{**row.__dict__, "note": "Polygraphy: outside tolerance or NaN/Inf"})
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------- what fits the device


def reference_budget(ort_device: Any, gpu: torch.device | None = None) -> int:
    """Bytes onnxruntime may use: 90% of the GPU's free memory with the CUDA provider, else 80% of
    the host's available memory."""
    kind = getattr(ort_device, "type", str(ort_device).split(":")[0])
    if kind == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(ort_device))
        return int(free * 0.9)
    import psutil

    return int(psutil.virtual_memory().available * 0.8)


def fitting_cases(stage: str, cases: Sequence[tuple[str, Mapping[str, Any]]], onnx_path: Path, fused: bool, budget: int) -> list:
    """The cases whose onnxruntime run fits ``budget`` bytes (arithmetic estimate); the others are
    logged as skipped."""
    from mimic.export.attention import graph_memory

    kept = []
    for case, feeds in cases:
        need = graph_memory(onnx_path, {k: tuple(np.shape(v)) for k, v in feeds.items()}, fused=fused)
        if need.peak > budget:
            log.info(f"  {stage} {case}: skipped, the onnxruntime reference needs {need.describe()}; {budget / 1e9:.1f} GB available")
            continue
        kept.append((case, feeds))
    return kept


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
    from mimic.export.attention import fused_graph
    from mimic.ort_session import cuda_available

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
                onnx_path = onnx_path_of(store, stage, manifest)
                ref_path = fused_graph(onnx_path)  # the same maths without attention score tensors
                dtypes = {i.name: i.dtype for i in runner.inputs}
                cases = [(p, {k: v.numpy() for k, v in random_feeds(stage, manifest, p, seed, dtypes).items()}) for p in points]
                if inputs_dir is not None:
                    real = Path(inputs_dir) / f"{stage}.pt"
                    if real.is_file():
                        saved = torch.load(real, map_location="cpu")
                        cases.append(("real", {k: v.to(dtypes.get(k, v.dtype)).numpy() for k, v in saved.items()}))
                kept = fitting_cases(stage, cases, onnx_path, ref_path != onnx_path, reference_budget(ort_device, dev))
                if not kept:
                    raise EngineError(f"{stage}: no comparison point fits the memory onnxruntime has here (see the lines above); "
                                      "validate at a smaller point (--points min) or where onnxruntime has more memory")
                rows += compare_runners(stage, precision, tol, engine_runner(runner, dev), reference_runner(ref_path, ort_device, f"onnxruntime:{stage}"), kept)
            finally:
                runner.close()
    finally:
        memory.free()
    log.info(format_table(rows))
    bad = sorted({f"{r.stage} ({r.point}/{r.output})" for r in rows if not r.passed})
    if bad:
        raise EngineError(f"validation failed: {', '.join(bad)} out of tolerance (see the table above)")
    return rows
