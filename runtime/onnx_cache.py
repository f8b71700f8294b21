"""Exported graphs for the onnxruntime backend: a given export folder, or a one-time export into the
cache keyed by the weight files, so `mimic run --backend onnxruntime --weights DIR` just works."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mimic.errors import EngineError
from mimic.mimicmotion_ref.weights import WeightsLayout, fetch_svd
from mimic.runtime.backend_api import STAGE_NAMES as RUNTIME_STAGES

CACHE_FORMAT = 1


def graphs_in(folder: Path, precision: str) -> dict[str, Path]:
    from mimic.export.specs import onnx_filename

    graphs = {s: Path(folder) / onnx_filename(s, precision) for s in RUNTIME_STAGES}
    missing = [s for s, p in graphs.items() if not p.is_file()]
    if missing:
        raise EngineError(f"{folder} lacks {precision} graphs for {', '.join(missing)}: run `mimic export --precision {precision} --out {folder}`")
    return graphs


def weights_fingerprint(layout: WeightsLayout) -> str:
    """Cheap identity of the weights: path, size and mtime of every file that shapes the graphs."""
    svd = fetch_svd(layout.svd)
    files = [Path(layout.checkpoint)] + sorted(p for p in svd.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors"))
    h = hashlib.sha256(f"format={CACHE_FORMAT}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def ensure_onnx_graphs(layout: WeightsLayout, precision: str, onnx_dir: Path | None, log) -> dict[str, Path]:
    if onnx_dir is not None:
        return graphs_in(onnx_dir, precision)
    from mimic.mimicmotion_ref.tiny import cache_root

    folder = cache_root() / "onnx" / weights_fingerprint(layout)
    done = folder / f".complete-{precision}"
    if done.is_file():
        return graphs_in(folder, precision)
    log(f"exporting {precision} ONNX graphs into the cache (once per weight set) ...")
    from mimic.export.command import export_command

    export_command(folder, layout=layout, precision=precision, stages=RUNTIME_STAGES, log=log)
    done.write_text(json.dumps({"precision": precision}) + "\n")
    return graphs_in(folder, precision)
