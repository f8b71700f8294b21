"""One output comparison for every validation: an exported graph vs PyTorch (``mimic export
--validate``) and a TensorRT engine vs onnxruntime (``mimic validate``).

Metrics, computed in float64 over the elements that are finite in both arrays (see
:class:`mimic.spec.Tolerance`):

* ``max_abs = max|got - ref|``;
* ``max_rel = max_abs / max|ref|`` (relative to the output's peak, so near-zero elements do not
  blow it up);
* ``nonfinite``: elements that are NaN/Inf in ``got`` or ``ref``; any makes the row fail;
* ``psnr_db`` for decoded frames (values in [-1, 1], peak-to-peak 2), when asked for.

A row passes when the shapes agree, nothing is non-finite and both errors are within the tolerance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from mimic.spec import Tolerance

FRAMES_PSNR_PEAK = 2.0  # decoded frames live in [-1, 1]


@dataclass(frozen=True)
class CompareRow:
    stage: str
    precision: str
    point: str  # the shape point ("B=1 F=4 H=64 W=128") or the case ("opt", "real")
    output: str
    shape: tuple[int, ...]  # the output's shape (got's, when the shapes differ)
    max_abs: float
    max_rel: float
    nonfinite: int
    tolerance: Tolerance
    psnr_db: float | None = None
    note: str = ""

    @property
    def passed(self) -> bool:
        return not self.note and self.nonfinite == 0 and self.max_abs <= self.tolerance.max_abs and self.max_rel <= self.tolerance.max_rel


def compare_outputs(got: np.ndarray, ref: np.ndarray, tolerance: Tolerance, *, stage: str, precision: str, point: str, output: str,
                    psnr_peak: float | None = None) -> CompareRow:
    """Compare ``got`` (the graph/engine under test) with ``ref`` (the reference)."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return CompareRow(stage, precision, point, output, tuple(got.shape), math.inf, math.inf, 0, tolerance, None,
                          f"shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
    g = got.astype(np.float64)
    r = ref.astype(np.float64)
    finite = np.isfinite(g) & np.isfinite(r)
    nonfinite = int(finite.size - np.count_nonzero(finite))
    diff = np.abs(g - r)[finite]
    max_abs = float(diff.max()) if diff.size else 0.0
    peak = float(np.abs(r[finite]).max()) if diff.size else 0.0
    max_rel = max_abs / peak if peak > 0 else (0.0 if max_abs == 0 else math.inf)
    psnr = None
    if psnr_peak is not None and diff.size:
        mse = float((diff ** 2).mean())
        psnr = math.inf if mse == 0 else 10.0 * math.log10(psnr_peak ** 2 / mse)
    return CompareRow(stage, precision, point, output, tuple(got.shape), max_abs, max_rel, nonfinite, tolerance, psnr,
                      "non-finite output" if nonfinite else "")


def format_table(rows: Iterable[CompareRow]) -> str:
    """The validation table (one row per output and shape point)."""
    rows = list(rows)
    header = ("stage", "precision", "point", "output", "shape", "max abs", "max rel", "nan/inf", "psnr dB", "tol abs/rel", "result")
    body = [
        (
            r.stage,
            r.precision,
            r.point,
            r.output,
            "x".join(str(d) for d in r.shape),
            f"{r.max_abs:.2e}",
            f"{r.max_rel:.2e}",
            str(r.nonfinite),
            "-" if r.psnr_db is None else ("inf" if math.isinf(r.psnr_db) else f"{r.psnr_db:.1f}"),
            f"{r.tolerance.max_abs:.1e}/{r.tolerance.max_rel:.1e}",
            ("pass" if r.passed else "FAIL") + (f" ({r.note})" if r.note else ""),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(b) for b in body)])
