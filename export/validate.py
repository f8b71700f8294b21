"""Exported graph vs PyTorch: onnxruntime (CPU) against the fp32 torch model at several shapes.

``validate_stage(spec, model, onnx_path, shapes) -> list[Row]``; ``format_table(rows)`` prints
them. Error metrics per output: ``max_abs = max|onnx - torch|`` and ``max_rel = max_abs / max|torch|``
(relative to the output's peak, so near-zero elements do not blow it up). A row passes when both
are within the spec's tolerance for the graph's precision, the shape matches the spec and the
output is finite. fp16 graphs are compared with the *fp32* torch model: the error includes the
precision loss, which is what the fp16 tolerances bound.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from mimic.errors import ExportError
from mimic.export.specs import ModelDims, ShapePoint, StageSpec, Tolerance
from mimic.export.wrappers import wrap

VALIDATION_SEED = 1  # the export traces seed-0 inputs; validation uses different values too


@dataclass(frozen=True)
class Case:
    """Inputs (fp32) and torch outputs (fp32 numpy) at one shape point."""

    point: ShapePoint
    inputs: dict[str, torch.Tensor]
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class Row:
    stage: str
    precision: str
    shape: str  # e.g. "B=1 F=4 H=64 W=128"
    output: str
    max_abs: float
    max_rel: float
    tolerance: Tolerance
    passed: bool
    note: str = ""


def describe_point(point: ShapePoint) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items()) or "static"


def reference_cases(spec: StageSpec, model: torch.nn.Module, points: Sequence[ShapePoint] | None = None, dims: ModelDims | None = None, seed: int = VALIDATION_SEED) -> list[Case]:
    """Run the fp32 torch model at each point (default: the spec's validation points)."""
    wrapper = wrap(spec.name, model)
    dims = dims or ModelDims.from_module(spec.name, wrapper)
    dtype = next(wrapper.parameters()).dtype
    cases = []
    for i, point in enumerate(points if points is not None else spec.validation_points):
        feeds = spec.dummy_inputs(point, dims, "fp32", seed=seed + i)
        with torch.no_grad():
            out = wrapper(*(v.to(dtype) if spec.tensor(k).fp16_dtype != "float32" else v for k, v in feeds.items()))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        cases.append(Case(point=dict(point), inputs=feeds, outputs={n: o.float().numpy() for n, o in zip(spec.output_names, outs)}))
    return cases


def graph_precision(onnx_path: Path) -> str:
    """The precision recorded in the exported graph's metadata (fp32 when absent)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == "mimic.precision"), "fp32")


def _session(onnx_path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ORT warns about fp16 nodes it cannot constant-fold on CPU
    opts.add_session_config_entry("session.disable_prepacking", "1")  # no second copy of the weights (full-size UNet)
    try:
        return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ExportError(f"onnxruntime cannot load {Path(onnx_path).name}: {str(err).splitlines()[0][:200]}") from None


def validate_stage(
    spec: StageSpec,
    model: torch.nn.Module | None,
    onnx_path: Path,
    shapes: Sequence[ShapePoint] | None = None,
    *,
    dims: ModelDims | None = None,
    precision: str | None = None,
    cases: Sequence[Case] | None = None,
) -> list[Row]:
    """Compare the graph at ``onnx_path`` with ``model`` (fp32) at ``shapes`` (default: the spec's
    validation points, which all differ from the export shape). ``cases`` (from
    :func:`reference_cases`) replaces running ``model``; pass them to validate fp16 after the model
    was converted in place."""
    precision = precision or graph_precision(onnx_path)
    tol = spec.tolerance(precision)
    if cases is None:
        if model is None:
            raise ValueError("validate_stage needs a model or precomputed cases")
        cases = reference_cases(spec, model, shapes, dims)
    sess = _session(onnx_path)
    rows = []
    for case in cases:
        feeds = {k: v.to(spec.tensor(k).torch_dtype(precision)).numpy() for k, v in case.inputs.items()}
        outs = sess.run(list(spec.output_names), feeds)
        for name, got in zip(spec.output_names, outs):
            ref = case.outputs[name]
            got = np.asarray(got, dtype=np.float32)
            note = ""
            if got.shape != ref.shape:
                rows.append(Row(spec.name, precision, describe_point(case.point), name, float("inf"), float("inf"), tol, False, f"shape {got.shape} != torch {ref.shape}"))
                continue
            finite = bool(np.isfinite(got).all())
            err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
            max_abs = float(err.max()) if err.size else 0.0
            peak = float(np.abs(ref).max()) if ref.size else 0.0
            max_rel = max_abs / peak if peak > 0 else (0.0 if max_abs == 0 else float("inf"))
            if not finite:
                note, max_abs, max_rel = "non-finite output", float("inf"), float("inf")
            passed = finite and max_abs <= tol.max_abs and max_rel <= tol.max_rel
            rows.append(Row(spec.name, precision, describe_point(case.point), name, max_abs, max_rel, tol, passed, note))
    return rows


def format_table(rows: Iterable[Row]) -> str:
    rows = list(rows)
    header = ("stage", "precision", "shape", "output", "max abs", "max rel", "tol abs/rel", "result")
    body = [
        (
            r.stage,
            r.precision,
            r.shape,
            r.output,
            f"{r.max_abs:.2e}",
            f"{r.max_rel:.2e}",
            f"{r.tolerance.max_abs:.1e}/{r.tolerance.max_rel:.1e}",
            ("pass" if r.passed else "FAIL") + (f" ({r.note})" if r.note else ""),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(b) for b in body)])
