"""Shared fixtures of the export tests: the tiny preset exported and validated once per session.

Import the fixtures into a test module (``from _export_fixtures import tiny_export``). pytest makes
one fixture definition per importing module, so the work itself is memoised here (module global):
however many export test modules run, the tiny stages are exported once.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

_CACHE: dict[str, "TinyExport"] = {}


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
            summary = export_weight_set(out, layout=layout, precision="both", validate=True)
        _CACHE[key] = TinyExport(out_dir=out, summary=summary, log=tuple(lines))
    return _CACHE[key]


@pytest.fixture(scope="session")
def tiny_export(tiny_layout, tmp_path_factory) -> TinyExport:
    """Every stage of the tiny preset exported fp32 + fp16 and validated (``export_weight_set``)."""
    return run_tiny_export(tiny_layout, tmp_path_factory)
