"""Exported graphs for the onnxruntime backend: a given export folder, or a one-time export into the
cache, so `mimic run --backend onnxruntime --weights DIR` just works.

The cache has one folder per weight set (by location); whether its graphs are still what these
weights and this export code produce is the export manifest's freshness record
(:func:`mimic.export.freshness.up_to_date`): a weight set is exported once, and again only when its
files, the export code or torch change.

Deep-feature caching's two graphs (``mimic.spec.CACHE_STAGES``) are optional: a folder without them
(an older export) serves every job that does not cache. They are listed when both are present
(fresh, in the cache), and exported into the cache only when asked for (``cache_stages=True``): each
is one more export of the UNet.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from mimic.errors import EngineError
from mimic.model.weights import WeightsLayout, fetch_svd
from mimic.spec import CACHE_STAGES, STAGE_NAMES, onnx_filename

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: freshness from the export manifest (1: .complete-<precision> stamps)
BASE_STAGES = tuple(s for s in STAGE_NAMES if s not in CACHE_STAGES)  # what every job runs


def graphs_in(folder: Path, precision: str, optional: tuple[str, ...] = CACHE_STAGES) -> dict[str, Path]:
    """The ``precision`` graphs in ``folder``: every base stage (EngineError naming the missing ones)
    plus the cached-step pair when ``optional`` holds both and both files are there."""
    graphs = {s: Path(folder) / onnx_filename(s, precision) for s in BASE_STAGES}
    missing = [s for s, p in graphs.items() if not p.is_file()]
    if missing:
        raise EngineError(f"{folder} lacks {precision} graphs for {', '.join(missing)}: run `mimic export --precision {precision} --out {folder}`")
    pair = {s: Path(folder) / onnx_filename(s, precision) for s in CACHE_STAGES}
    if set(CACHE_STAGES) <= set(optional) and all(p.is_file() for p in pair.values()):
        graphs.update(pair)
    return graphs


def cache_folder(layout: WeightsLayout) -> Path:
    """The cache folder of a weight set: keyed by where its files are (their contents are the
    freshness record's business)."""
    from mimic.model.tiny import cache_root

    where = f"format={CACHE_FORMAT}\n{fetch_svd(layout.svd).resolve()}\n{Path(layout.checkpoint).resolve()}\n"
    return cache_root() / "onnx" / hashlib.sha256(where.encode()).hexdigest()[:20]


def ensure_onnx_graphs(layout: WeightsLayout, precision: str, onnx_dir: Path | None = None, cache_stages: bool = False) -> dict[str, Path]:
    """The ``precision`` graphs of every runtime stage: from ``onnx_dir`` when given (used as is),
    else from the cache, exporting the stale ones first. ``cache_stages``: also export deep-feature
    caching's pair into the cache when stale (without it, the pair is listed only when fresh)."""
    if onnx_dir is not None:
        return graphs_in(onnx_dir, precision)
    from mimic.export.freshness import up_to_date
    from mimic.files import file_lock

    folder = cache_folder(layout)
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".export.lock"):  # two runs on one weight set export once
        stale = up_to_date(folder, layout, STAGE_NAMES, precision)
        todo = [s for s in stale if cache_stages or s not in CACHE_STAGES]
        if todo:
            log.info(f"exporting {precision} ONNX graphs into the cache (once per weight set) ...")
            from mimic.export.exporter import export_weight_set

            export_weight_set(folder, layout=layout, precision=precision, stages=todo)
    return graphs_in(folder, precision, optional=CACHE_STAGES if cache_stages or not set(stale) & set(CACHE_STAGES) else ())
