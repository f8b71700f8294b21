"""Is an exported graph still what these weights and this export code would produce?

The one freshness record for exported graphs. ``mimic export`` writes it: the export manifest
(``export_manifest.json``) records, per stage and precision, the graph's *source*:

* ``weights``: sha256 of every weight/config file the stage's graph is made from, by name relative
  to the weights (never an absolute path): ``svd/<sub>/<file>`` and ``checkpoint/<file>``;
* ``export_code``: a digest of the code that shapes the graphs (``mimic/export``, ``mimic/spec.py``
  and the model definitions in ``mimic/model``);
* ``torch``: the exporting torch version.

:func:`up_to_date` answers "which of these stages must be exported again?" for ``mimic
build-engines`` (its ``OUT/onnx`` folder) and the onnxruntime backend's cache (one export per weight
set). Hashing multi-GB weights on every check would cost seconds, so file hashes are memoised per
machine in ``<cache>/file-hashes.json`` under the file's (path, size, mtime) identity: a touched but
unchanged file is hashed once more and still counts as the same weights.

The manifest entry of a (stage, precision) is withdrawn before its graph is rewritten and written
back right after, so an interrupted export reads as stale, never as fresh.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from mimic.spec import StageName

MANIFEST = "export_manifest.json"
MANIFEST_SCHEMA = 2  # 2: per-entry "source" (the freshness record)
HASH_MEMO = "file-hashes.json"
_CHUNK = 1 << 22


class SvdFolder:
    """Subfolders of the SVD weights the exported stages read: diffusers' component folders (two
    stages are named after their component, so those names are spelled once, in ``mimic.spec``)."""

    IMAGE_ENCODER = StageName.IMAGE_ENCODER
    VAE = "vae"
    UNET = StageName.UNET


CHECKPOINT = "checkpoint"  # the MimicMotion checkpoint (UNet + PoseNet weights)
# What each stage's graph is made from: SVD subfolders and/or the MimicMotion checkpoint.
STAGE_SOURCES: Mapping[str, tuple[str, ...]] = {
    StageName.IMAGE_ENCODER: (SvdFolder.IMAGE_ENCODER,),
    StageName.VAE_ENCODER: (SvdFolder.VAE,),
    StageName.VAE_DECODER: (SvdFolder.VAE,),
    StageName.POSE_NET: (SvdFolder.UNET, CHECKPOINT),
    StageName.UNET: (SvdFolder.UNET, CHECKPOINT),
    StageName.UNET_FEATURES: (SvdFolder.UNET, CHECKPOINT),  # deep-feature caching: the same UNet, two more graphs
    StageName.UNET_SHALLOW: (SvdFolder.UNET, CHECKPOINT),
}
# Files of an SVD subfolder that shape a graph: its configs, and its weights except the UNet's
# (the UNet's weights come from the MimicMotion checkpoint; only its config.json matters).
_SVD_SUFFIXES = {SvdFolder.IMAGE_ENCODER: (".json", ".safetensors"), SvdFolder.VAE: (".json", ".safetensors"), SvdFolder.UNET: (".json",)}


# ------------------------------------------------------------------------------------- hashing


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


_memo_cache: dict[str, list] = {}


def _memo_path() -> Path:
    from mimic.model.tiny import cache_root

    return cache_root() / HASH_MEMO


def _read_memo(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def weight_file_sha256(path: str | Path) -> str:
    """sha256 of a (large) weight file, memoised per machine under its (path, size, mtime)."""
    from mimic.files import atomic_write_text, file_lock

    path = Path(path).resolve()
    st = path.stat()
    ident = [st.st_size, st.st_mtime_ns]
    key = str(path)
    hit = _memo_cache.get(key)
    memo_path = _memo_path()
    if hit is None:
        hit = _read_memo(memo_path).get(key)
    if isinstance(hit, list) and len(hit) == 3 and hit[:2] == ident:
        _memo_cache[key] = hit
        return hit[2]
    digest = sha256_file(path)
    entry = [*ident, digest]
    _memo_cache[key] = entry
    try:
        with file_lock(memo_path.with_name(f".{HASH_MEMO}.lock"), timeout_s=30):
            memo = {k: v for k, v in _read_memo(memo_path).items() if Path(k).exists()}
            memo[key] = entry
            atomic_write_text(memo_path, json.dumps(memo, indent=0, sort_keys=True) + "\n")
    except OSError:  # a read-only cache only costs a re-hash next time
        pass
    return digest


def export_code_digest() -> str:
    """Digest of the code that shapes the exported graphs (a change re-exports, and so rebuilds)."""
    import mimic.export as export_pkg

    root = Path(export_pkg.__file__).resolve().parent.parent  # the mimic package
    files = sorted((*root.joinpath("export").glob("*.py"), root / "spec.py", *root.joinpath("model").glob("*.py")))
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(root).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


# -------------------------------------------------------------------------------------- sources


def _weight_files(layout, svd_dir: Path, stage: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for need in STAGE_SOURCES[stage]:
        if need == CHECKPOINT:
            ckpt = Path(layout.checkpoint)
            files[f"checkpoint/{ckpt.name}"] = ckpt
            continue
        folder = Path(svd_dir) / need
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.is_file() and p.suffix in _SVD_SUFFIXES[need]:
                    files[f"svd/{need}/{p.name}"] = p
    return files


def stage_source(layout, svd_dir: Path, stage: str, export_code: str | None = None) -> dict[str, Any]:
    """The freshness record of ``stage`` exported from ``layout`` now (weights hashed, memoised)."""
    from mimic.fingerprint import package_version

    weights = {name: weight_file_sha256(p) for name, p in _weight_files(layout, svd_dir, stage).items() if p.is_file()}
    return {"weights": weights, "export_code": export_code or export_code_digest(), "torch": package_version("torch")}


def stage_sources(layout, svd_dir: Path, stages: Iterable[str]) -> dict[str, dict[str, Any]]:
    code = export_code_digest()
    return {s: stage_source(layout, svd_dir, s, code) for s in stages}


# -------------------------------------------------------------------------------------- checking


def load_manifest(folder: str | Path) -> dict:
    """The export manifest of ``folder`` ({} when absent, unreadable or of another schema)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("schema") == MANIFEST_SCHEMA else {}


def _graph_intact(folder: Path, entry: Mapping[str, Any]) -> bool:
    try:
        size = (folder / entry["path"]).stat().st_size
        if entry.get("data_path"):
            size += (folder / entry["data_path"]).stat().st_size
        return size == int(entry["size_bytes"])
    except (OSError, KeyError, TypeError, ValueError):
        return False


def up_to_date(folder: str | Path, layout, stages: Iterable[str], precision: str) -> list[str]:
    """The stages among ``stages`` whose ``precision`` graph in ``folder`` is missing, damaged or
    was made from other weights, export code or torch: the ones to export (again). [] = all fresh."""
    from mimic.model.weights import fetch_svd

    stages = list(stages)
    folder = Path(folder)
    entries = load_manifest(folder).get("stages", {})
    candidates = [s for s in stages if _graph_intact(folder, (entries.get(s) or {}).get(precision) or {})]
    if not candidates:
        return stages
    sources = stage_sources(layout, fetch_svd(layout.svd), candidates)
    fresh = {s for s in candidates if entries[s][precision].get("source") == sources[s]}
    return [s for s in stages if s not in fresh]
