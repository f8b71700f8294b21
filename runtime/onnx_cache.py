"""Exported graphs for the onnxruntime backend: a given export folder, or a one-time export into the
cache, so `mimic run --backend onnxruntime --weights DIR` just works.

The cache has one folder per weight set (by location); whether its graphs are still what these
weights and this export code produce is the export manifest's freshness record
(:func:`mimic.export.freshness.up_to_date`): a weight set is exported once, and again only when its
files, the export code or torch change.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from mimic.errors import EngineError
from mimic.model.weights import WeightsLayout, fetch_svd
from mimic.spec import STAGE_NAMES, onnx_filename

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: freshness from the export manifest (1: .complete-<precision> stamps)


def graphs_in(folder: Path, precision: str) -> dict[str, Path]:
    graphs = {s: Path(folder) / onnx_filename(s, precision) for s in STAGE_NAMES}
    missing = [s for s, p in graphs.items() if not p.is_file()]
    if missing:
        raise EngineError(f"{folder} lacks {precision} graphs for {', '.join(missing)}: run `mimic export --precision {precision} --out {folder}`")
    return graphs


def cache_folder(layout: WeightsLayout) -> Path:
    """The cache folder of a weight set: keyed by where its files are (their contents are the
    freshness record's business)."""
    from mimic.model.tiny import cache_root

    where = f"format={CACHE_FORMAT}\n{fetch_svd(layout.svd).resolve()}\n{Path(layout.checkpoint).resolve()}\n"
    return cache_root() / "onnx" / hashlib.sha256(where.encode()).hexdigest()[:20]


def ensure_onnx_graphs(layout: WeightsLayout, precision: str, onnx_dir: Path | None = None) -> dict[str, Path]:
    """The ``precision`` graphs of every runtime stage: from ``onnx_dir`` when given (used as is),
    else from the cache, exporting the stale ones first."""
    if onnx_dir is not None:
        return graphs_in(onnx_dir, precision)
    from mimic.export.freshness import up_to_date
    from mimic.files import file_lock

    folder = cache_folder(layout)
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".export.lock"):  # two runs on one weight set export once
        stale = up_to_date(folder, layout, STAGE_NAMES, precision)
        if stale:
            log.info(f"exporting {precision} ONNX graphs into the cache (once per weight set) ...")
            from mimic.export.exporter import export_weight_set

            export_weight_set(folder, layout=layout, precision=precision, stages=stale)
    return graphs_in(folder, precision)
