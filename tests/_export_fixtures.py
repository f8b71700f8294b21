"""Shared fixtures of the export tests: the tiny preset exported and validated once per session.

Import the fixtures into a test module (``from _export_fixtures import tiny_export``). pytest makes
one fixture definition per importing module, so the work itself is memoised here (module global):
however many export test modules run, the tiny stages are exported once.

The session export holds every stage a job without deep-feature caching runs (``BASE_STAGES``);
caching's two UNet graphs are exported by the one module that tests them (tests/test_cache_graphs.py),
so the other export tests do not pay two more UNet exports.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from mimic.spec import CACHE_STAGES, STAGE_NAMES

_CACHE: dict[str, "TinyExport"] = {}
BASE_STAGES = tuple(s for s in STAGE_NAMES if s not in CACHE_STAGES)  # what the session export holds


@dataclass(frozen=True)
class TinyExport:
    out_dir: Path
    summary: object  # mimic.export.exporter.ExportSummary
    log: tuple[str, ...]

    def result(self, stage: str, precision: str):
        return next(r for r in self.summary.results if r.stage == stage and r.precision == precision)

    def rows(self, stage: str, precision: str):
        return [r for r in self.summary.rows if r.stage == stage and r.precision == precision]


@contextlib.contextmanager
def captured_log(name: str = "mimic") -> Iterator[list[str]]:
    """The INFO+ messages of the ``name`` loggers while the block runs (for session fixtures, where
    pytest's function-scoped ``caplog`` is not available)."""
    lines: list[str] = []

    class _Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger(name)
    handler, old_level = _Lines(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def run_tiny_export(layout, tmp_path_factory) -> TinyExport:
    key = str(tmp_path_factory.getbasetemp())
    if key not in _CACHE:
        from mimic.export.exporter import export_weight_set

        out = tmp_path_factory.mktemp("tiny-export")
        with captured_log() as lines:
            summary = export_weight_set(out, layout=layout, precision="both", validate=True, stages=BASE_STAGES)
        _CACHE[key] = TinyExport(out_dir=out, summary=summary, log=tuple(lines))
    return _CACHE[key]


@pytest.fixture(scope="session")
def tiny_export(tiny_layout, tmp_path_factory) -> TinyExport:
    """Every base stage of the tiny preset exported fp32 + fp16 and validated (``export_weight_set``)."""
    return run_tiny_export(tiny_layout, tmp_path_factory)


def assert_io_matches_spec(graph, spec, precision: str) -> None:
    """An exported graph's inputs and outputs: the spec's names in order, its dtypes for ``precision``
    and its dynamic axes' dim_params."""
    import onnx

    to_np = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}
    assert [i.name for i in graph.input] == list(spec.input_names)
    assert [o.name for o in graph.output] == list(spec.output_names)
    for vi in (*graph.input, *graph.output):
        t = spec.tensor(vi.name)
        assert to_np[vi.type.tensor_type.elem_type] == t.dtype(precision), (spec.name, precision, vi.name)
        dims = vi.type.tensor_type.shape.dim
        for axis, name in t.dynamic_axes().items():
            assert dims[axis].dim_param == name
