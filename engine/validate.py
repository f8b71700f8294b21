"""``mimic validate --engines DIR``: every published engine against onnxruntime on the same ONNX.

For each stage it draws deterministic random inputs at the profile's shape points (min/opt/max,
default opt; realistic value ranges per tensor kind from the export specs) plus, when given, real
inputs saved as ``<stage>.pt`` (a dict of tensors), runs the TensorRT engine and onnxruntime on the
ONNX file the manifest names, and prints one row per output: max abs error, relative error
(max|trt - ort| / max|ort|), PSNR for decoded frames, NaN/Inf count. A stage outside its
tolerance (``export.specs`` tolerances for the graph's precision: both max abs and relative error
within bounds, no NaN/Inf) makes the command fail.

Before anything runs, every engine goes through the store's checks (manifest vs the installed
TensorRT, plan size and sha256; the GPU comparison too when there is a GPU): that part works on any
machine (``--check-only``). Engine execution needs a GPU: without one this is a one-line EngineError.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import torch

from mimic.engine.gpu import require_gpu, runtime_info
from mimic.engine.store import EngineStore, describe_gpu_target
from mimic.errors import EngineError

PSNR_OUTPUTS = {"frames"}  # decoded frames in [-1, 1]: PSNR with peak-to-peak 2
PSNR_PEAK = 2.0
# Defaults for stages the specs do not know (a foreign engine in the folder).
DEFAULT_TOL = (1e-2, 1e-2)
# The spec tolerances bound |graph - torch fp32| for one fp16 runtime; TensorRT and onnxruntime each
# sit within that of the fp32 model, so their difference is within twice it (triangle inequality).
TOLERANCE_SCALE = 2.0


@dataclass(frozen=True)
class OutputReport:
    stage: str
    case: str  # "opt", "min", "max" or "real"
    output: str
    shape: tuple[int, ...]
    max_abs: float
    rel_err: float
    psnr_db: float | None
    nonfinite: int
    tol_abs: float
    tol_rel: float

    @property
    def ok(self) -> bool:
        return self.nonfinite == 0 and self.max_abs <= self.tol_abs and self.rel_err <= self.tol_rel


def compare(stage: str, case: str, name: str, got: np.ndarray, ref: np.ndarray, tol: tuple[float, float]) -> OutputReport:
    """Error statistics of ``got`` (engine) vs ``ref`` (onnxruntime), computed in float64."""
    if got.shape != ref.shape:
        raise EngineError(f"{stage}: output '{name}' has shape {got.shape} from TensorRT but {ref.shape} from onnxruntime")
    g = got.astype(np.float64)
    r = ref.astype(np.float64)
    nonfinite = int((~np.isfinite(g)).sum())
    finite = np.isfinite(g) & np.isfinite(r)
    diff = np.abs(g - r)[finite]
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(r[finite]).max()) if diff.size else 0.0
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    psnr = None
    if name in PSNR_OUTPUTS and diff.size:
        mse = float((diff ** 2).mean())
        psnr = math.inf if mse == 0 else 10.0 * math.log10(PSNR_PEAK ** 2 / mse)
    return OutputReport(stage, case, name, tuple(got.shape), max_abs, rel, psnr, nonfinite, tol[0], tol[1])


def format_table(rows: Iterable[OutputReport]) -> str:
    header = f"{'stage':<16} {'case':<5} {'output':<14} {'shape':<22} {'max_abs':>9} {'rel_err':>9} {'psnr_db':>8} {'nan/inf':>7} {'tol abs/rel':>15}  status"
    lines = [header, "-" * len(header)]
    for r in rows:
        psnr = "-" if r.psnr_db is None else ("inf" if math.isinf(r.psnr_db) else f"{r.psnr_db:.1f}")
        shape = "x".join(str(d) for d in r.shape)
        lines.append(
            f"{r.stage:<16} {r.case:<5} {r.output:<14} {shape:<22} {r.max_abs:9.2e} {r.rel_err:9.2e} {psnr:>8} {r.nonfinite:>7} "
            f"{r.tol_abs:7.0e}/{r.tol_rel:<7.0e}  {'ok' if r.ok else 'FAIL'}"
        )
    return "\n".join(lines)


def _stage_spec(stage: str):
    try:
        from mimic.export.specs import ALL_STAGES
    except ImportError:  # pragma: no cover
        return None
    return ALL_STAGES.get(stage)


def tolerance_for(stage: str, precision: str, scale: float = TOLERANCE_SCALE) -> tuple[float, float]:
    """(max abs, max rel) allowed between TensorRT and onnxruntime for ``stage``'s graph."""
    spec = _stage_spec(stage)
    if spec is None:
        return DEFAULT_TOL
    tol = spec.tol_fp16 if precision == "fp16" and spec.tol_fp16 is not None else spec.tol_fp32
    return (tol.max_abs * scale, tol.max_rel * scale)


def random_feeds(stage: str, manifest: Mapping, which: str, seed: int, input_dtypes: Mapping[str, torch.dtype]) -> dict[str, torch.Tensor]:
    """Inputs at the ``which`` (min/opt/max) point of the engine's first profile, in realistic ranges."""
    try:
        from mimic.export.specs import _draw
    except ImportError:  # pragma: no cover
        _draw = None
    profiles = manifest["key_inputs"]["build"]["profiles"]
    if not profiles:
        raise EngineError(f"{stage}: the manifest records no optimization profile")
    spec = _stage_spec(stage)
    gen = torch.Generator().manual_seed(seed)
    feeds = {}
    for name, shapes in profiles[0].items():
        shape = tuple(shapes[which])
        kind = "normal"
        if spec is not None:
            try:
                kind = spec.tensor(name).kind
            except KeyError:
                pass
        x = _draw(kind, shape, gen) if _draw is not None else torch.randn(shape, generator=gen)
        feeds[name] = x.to(input_dtypes.get(name, torch.float32))
    return feeds


def _ort_session(onnx_path: Path, device: torch.device):
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(onnx_path), opts, providers=providers)
    except Exception as exc:
        raise EngineError(f"onnxruntime cannot load {onnx_path}: {str(exc).splitlines()[0][:200]}") from None


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


def check_engines(engines_dir: str | Path, stages: Iterable[str] | None = None, echo: Callable[[str], None] = print) -> list[str]:
    """Store checks of every engine without deserializing (no GPU needed); prints one line each.

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
        echo(f"  {stage:<16} ok  {len(v.plan) / 1e6:8.1f} MB  {trt['flavour']} {trt['version']}  for {describe_gpu_target(manifest['gpu'])}")
    return wanted


def validate_engines(
    engines_dir: str | Path,
    stages: Iterable[str] | None = None,
    points: Iterable[str] = ("opt",),
    inputs_dir: str | Path | None = None,
    seed: int = 0,
    device: str = "cuda",
    tolerance_scale: float = TOLERANCE_SCALE,
    echo: Callable[[str], None] = print,
) -> list[OutputReport]:
    """Validate engines; prints the table and raises EngineError naming the stages out of tolerance."""
    points = list(points)
    for p in points:
        if p not in ("min", "opt", "max"):
            raise EngineError(f"unknown shape point {p!r}; use min, opt or max")
    store = EngineStore(engines_dir)
    wanted = check_engines(store.root, stages, echo=echo)  # corrupt / mismatched engines fail here, GPU or not
    require_gpu("mimic validate (engine execution)")
    from mimic.engine.trt_backend import TensorRTBackend

    backend = TensorRTBackend(store.root, device=device, stages=wanted, preload=False)
    rows: list[OutputReport] = []
    try:
        for stage in wanted:
            runner = backend.runner(stage)
            manifest = store.read_manifest(stage)
            precision = (manifest.get("onnx") or {}).get("precision", "fp16")
            tol = tolerance_for(stage, precision, tolerance_scale)
            sess = _ort_session(onnx_path_of(store, stage, manifest), backend.device)
            dtypes = {i.name: i.dtype for i in runner.inputs}
            cases = [(p, random_feeds(stage, manifest, p, seed, dtypes)) for p in points]
            if inputs_dir is not None:
                real = Path(inputs_dir) / f"{stage}.pt"
                if real.is_file():
                    cases.append(("real", {k: v for k, v in torch.load(real, map_location="cpu").items()}))
            for case, feeds in cases:
                got = backend.run(stage, {k: v.to(backend.device) for k, v in feeds.items()})
                torch.cuda.synchronize(backend.device)
                ort_in = {m.name: feeds[m.name].to(dtypes.get(m.name, feeds[m.name].dtype)).cpu().numpy() for m in sess.get_inputs()}
                ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, ort_in)))
                for name, t in got.items():
                    rows.append(compare(stage, case, name, t.float().cpu().numpy(), np.asarray(ref[name]), tol))
    finally:
        backend.close()
    echo(format_table(rows))
    bad = sorted({f"{r.stage} ({r.case}/{r.output})" for r in rows if not r.ok})
    if bad:
        raise EngineError(f"validation failed: {', '.join(bad)} out of tolerance (see the table above)")
    return rows
