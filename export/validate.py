"""Exported graph vs PyTorch: onnxruntime (CPU) against the fp32 torch model at several shapes.

``validate_stage(spec, model, onnx_path, shapes) -> list[CompareRow]``; ``format_table(rows)``
prints them. The metrics and the pass rule are :func:`mimic.export.compare.compare_outputs`'s (the
engine validation uses the same): max abs error, max error relative to the output's peak, NaN/Inf
fail, each within the spec's tolerance for the graph's precision. fp16 graphs are compared with the
*fp32* torch model: the error includes the precision loss, which is what the fp16 tolerances bound.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mimic.errors import ExportError
from mimic.export.compare import CompareRow, compare_outputs, format_table
from mimic.export.dummy import dims_from_module, dummy_inputs, torch_dtype
from mimic.export.wrappers import wrap
from mimic.ort_session import create_session
from mimic.spec import ModelDims, ShapePoint, StageSpec

__all__ = ["Case", "CompareRow", "VALIDATION_SEED", "describe_point", "format_table", "graph_precision", "reference_cases", "validate_stage"]

VALIDATION_SEED = 1  # the export traces seed-0 inputs; validation uses different values too


@dataclass(frozen=True)
class Case:
    """Inputs (fp32) and torch outputs (fp32 numpy) at one shape point."""

    point: ShapePoint
    inputs: dict[str, torch.Tensor]
    outputs: dict[str, np.ndarray]


def describe_point(point: ShapePoint) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items()) or "static"


def reference_cases(spec: StageSpec, model: torch.nn.Module, points: Sequence[ShapePoint] | None = None, dims: ModelDims | None = None, seed: int = VALIDATION_SEED) -> list[Case]:
    """Run the fp32 torch model at each point (default: the spec's validation points)."""
    wrapper = wrap(spec.name, model)
    dims = dims or dims_from_module(spec.name, wrapper)
    dtype = next(wrapper.parameters()).dtype
    cases = []
    for i, point in enumerate(points if points is not None else spec.validation_points):
        feeds = dummy_inputs(spec, point, dims, "fp32", seed=seed + i)
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


def validate_stage(
    spec: StageSpec,
    model: torch.nn.Module | None,
    onnx_path: Path,
    shapes: Sequence[ShapePoint] | None = None,
    *,
    dims: ModelDims | None = None,
    precision: str | None = None,
    cases: Sequence[Case] | None = None,
) -> list[CompareRow]:
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
    # CPU, without pre-packed weight copies (the full-size UNet validates on a 24 GB machine).
    sess = create_session(onnx_path, "cpu", disable_prepacking=True, error=ExportError, label=Path(onnx_path).name)
    rows = []
    for case in cases:
        feeds = {k: v.to(torch_dtype(spec.tensor(k), precision)).numpy() for k, v in case.inputs.items()}
        outs = sess.run(list(spec.output_names), feeds)
        for name, got in zip(spec.output_names, outs):
            rows.append(compare_outputs(np.asarray(got, dtype=np.float32), case.outputs[name], tol, stage=spec.name, precision=precision,
                                        point=describe_point(case.point), output=name))
    return rows
