"""``mimic export``: every stage of a weight set to ONNX (fp32 and/or fp16), optionally validated.

    mimic export --preset tiny --out DIR [--precision fp16|fp32|both] [--validate] [--stage NAME ...]
    mimic export --weights DIR --out DIR ...

Writes ``DIR/<precision>/<stage>.onnx`` (+ ``.onnx.data`` for graphs over 2 GB), ``DIR/export_manifest.json``
(hashes, opset, model dims, profile set and each graph's source, the freshness record of
:mod:`mimic.export.freshness`; no absolute paths, no timestamps) and the runtime's model info.
Everything a user can get wrong (precision, stage names, opset, output folder, missing weight folders) is
checked before any model is loaded.

Memory: one model group at a time (CLIP; VAE; UNet + PoseNet), loaded with the meta-device loader.
The one loaded UNet serves its three graphs: ``unet`` and deep-feature caching's pair
``unet_features`` / ``unet_shallow`` (:mod:`mimic.export.wrappers`).
fp32 graphs are exported first, then the same modules are converted to fp16 *in place*; validation
reference outputs are computed once from the fp32 modules, before the conversion.
"""
from __future__ import annotations

import gc
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from mimic.errors import ExportError, InputError, WeightsError
from mimic.export.compare import CompareRow, format_table
from mimic.export.freshness import CHECKPOINT, MANIFEST, MANIFEST_SCHEMA, STAGE_SOURCES, SvdFolder, load_manifest, stage_sources
from mimic.export.onnx_export import DEFAULT_OPSET, EXPORTER, SUPPORTED_OPSETS, ExportResult, export_stage
from mimic.export.validate import reference_cases, validate_stage
from mimic.files import atomic_write_text
from mimic.model.model_info import ModelInfo
from mimic.model.weights import WeightsLayout
from mimic.spec import DWPOSE_STAGES, STAGES, ModelDims, StageName

log = logging.getLogger(__name__)

PRECISION_CHOICES = {"fp32": ("fp32",), "fp16": ("fp16",), "both": ("fp32", "fp16")}
# Stages that share one loaded model, in load order.
_UNET_GROUP = (StageName.POSE_NET, StageName.UNET, StageName.UNET_FEATURES, StageName.UNET_SHALLOW)
_GROUPS = ((StageName.IMAGE_ENCODER,), (StageName.VAE_ENCODER, StageName.VAE_DECODER), _UNET_GROUP)


@dataclass
class ExportSummary:
    out_dir: Path
    precisions: tuple[str, ...]
    results: list[ExportResult] = field(default_factory=list)
    rows: list[CompareRow] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: load + export + validate
    manifest: Path | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)


def parse_precisions(precision: str) -> tuple[str, ...]:
    try:
        return PRECISION_CHOICES[str(precision).lower()]
    except KeyError:
        raise InputError(f"unknown precision {precision!r}; use fp16, fp32 or both") from None


def parse_stages(stages: Iterable[str] | None) -> tuple[str, ...]:
    if not stages:
        return tuple(STAGES)
    wanted = []
    for s in stages:
        if s in DWPOSE_STAGES:
            raise InputError(f"stage {s!r} ships as ONNX (DWPose) and is not exported; exportable stages: {', '.join(STAGES)}")
        if s not in STAGES:
            raise InputError(f"unknown stage {s!r}; exportable stages: {', '.join(STAGES)}")
        wanted.append(s)
    return tuple(s for s in STAGES if s in wanted)  # pipeline order, no duplicates


def check_output_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed and prove it writable (before any work)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output path {out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as err:
        raise InputError(f"output directory {out_dir} is not writable ({err.strerror or err})") from None
    return out_dir


def resolve_layout(preset: str | None, weights: Path | None, layout: WeightsLayout | None, **parts) -> WeightsLayout:
    """The weights to use: ``layout``, or ``--preset``/``--weights`` with per-part overrides
    (``parts``: svd, checkpoint, det_model, pose_model)."""
    parts = {k: v for k, v in parts.items() if v is not None}
    if layout is not None:
        if preset is not None or weights is not None or parts:
            raise InputError("give a layout, --preset or --weights, not several")
        return layout
    from mimic.model.presets import layout_from_options

    return layout_from_options(preset=preset, weights=Path(weights) if weights is not None else None, **parts)


def check_opset(opset: int) -> int:
    if opset not in SUPPORTED_OPSETS:
        raise InputError(f"--opset {opset} is not supported by the {EXPORTER} exporter; use one of {', '.join(map(str, SUPPORTED_OPSETS))}")
    return opset


_WEIGHT_STEMS = {SvdFolder.VAE: ("diffusion_pytorch_model",), SvdFolder.IMAGE_ENCODER: ("model",)}  # the UNet's come from the checkpoint


def _has_weights(folder: Path, stems: tuple[str, ...]) -> bool:
    return any((folder / f"{stem}{v}.safetensors").is_file() for stem in stems for v in (".fp16", ""))


def check_weights(svd_dir: Path, layout: WeightsLayout, stages: Sequence[str]) -> None:
    """One line naming every missing piece the chosen stages need."""
    missing: dict[str, list[str]] = {}
    for stage in stages:
        for need in STAGE_SOURCES[stage]:
            if need == CHECKPOINT:
                ok = Path(layout.checkpoint).is_file()
                what = f"MimicMotion checkpoint {Path(layout.checkpoint).name}"
            else:
                stems = _WEIGHT_STEMS.get(need, ())
                ok = (svd_dir / need / "config.json").is_file() and (not stems or _has_weights(svd_dir / need, stems))
                what = f"{need}/ (config.json{' + ' + stems[0] + '[.fp16].safetensors' if stems else ''})"
            if not ok:
                missing.setdefault(what, []).append(stage)
    if missing:
        parts = "; ".join(f"{what} (needed by {', '.join(st)})" for what, st in missing.items())
        raise WeightsError(f"weights in {svd_dir} are incomplete: missing {parts}")


def _load_group(group: tuple[str, ...], svd_dir: Path, layout: WeightsLayout) -> dict[str, torch.nn.Module]:
    from mimic.model import loader
    from mimic.model.weights import read_json

    if group == (StageName.IMAGE_ENCODER,):
        return {StageName.IMAGE_ENCODER: loader.load_image_encoder(svd_dir)}
    if group == (StageName.VAE_ENCODER, StageName.VAE_DECODER):
        vae = loader.load_vae(svd_dir)
        return {StageName.VAE_ENCODER: vae, StageName.VAE_DECODER: vae}
    unet, pose_net = loader.load_unet_and_posenet(read_json(svd_dir / SvdFolder.UNET / "config.json"), layout.checkpoint)
    return {StageName.POSE_NET: pose_net, **{s: unet for s in _UNET_GROUP[1:]}}  # one UNet, three graphs


def _unique(modules: Iterable[torch.nn.Module]) -> list[torch.nn.Module]:
    seen: dict[int, torch.nn.Module] = {}
    for m in modules:
        seen.setdefault(id(m), m)
    return list(seen.values())


def export_weight_set(
    out_dir: Path,
    *,
    preset: str | None = None,
    weights: Path | None = None,
    layout: WeightsLayout | None = None,
    precision: str = "both",
    validate: bool = False,
    stages: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
    svd: str | None = None,
    checkpoint: Path | None = None,
) -> ExportSummary:
    """Export the chosen stages; raises ExportError (after writing everything and logging the table)
    when a validated graph is out of tolerance. Progress goes to this module's logger."""
    from mimic.export.wrappers import wrap
    from mimic.model.weights import fetch_svd

    # 1. Everything the user controls, before any work.
    precisions = parse_precisions(precision)
    wanted = parse_stages(stages)
    check_opset(opset)
    out_dir = check_output_dir(out_dir)
    layout = resolve_layout(preset, weights, layout, svd=svd, checkpoint=checkpoint)
    svd_dir = fetch_svd(layout.svd)
    check_weights(svd_dir, layout, wanted)
    info = ModelInfo.from_svd_dir(svd_dir)
    dims = info.dims
    summary = ExportSummary(out_dir=out_dir, precisions=precisions)
    log.info(f"exporting {', '.join(wanted)} as {' + '.join(precisions)} ONNX ({EXPORTER} exporter, opset {opset}) into {out_dir}")
    log.info(f"model dims: embed {dims.embed_dim}, pose channels {dims.pose_channels}, latent {dims.latent_channels}; shape profiles: {'small (the tiny and toy presets)' if dims.profile_set == 'tiny' else 'released sizes'}")
    sources = stage_sources(layout, svd_dir, wanted)
    # Withdraw the graphs about to change: an interrupted export reads as stale, never as fresh.
    write_manifest(out_dir, [], dims, opset, withdraw=[(s, p) for s in wanted for p in precisions])

    # 2. One model group at a time.
    done = 0
    for group in _GROUPS:
        group_stages = [s for s in group if s in wanted]
        if not group_stages:
            continue
        t_load = time.perf_counter()
        span = f"{done + 1}" if len(group_stages) == 1 else f"{done + 1}-{done + len(group_stages)}"
        log.info(f"[{span}/{len(wanted)}] loading weights for {', '.join(group_stages)} ...")
        modules = _load_group(group, svd_dir, layout)
        need_fp32 = "fp32" in precisions or validate
        for m in _unique(modules.values()):
            m.to(torch.float32 if need_fp32 else torch.float16).eval()
        stage_t = {s: (time.perf_counter() - t_load) / len(group_stages) for s in group_stages}
        cases = {}
        if validate:
            for s in group_stages:
                t = time.perf_counter()
                log.info(f"  {s}: torch fp32 reference at {len(STAGES[s].validation_points)} shapes")
                cases[s] = reference_cases(STAGES[s], modules[s], dims=dims)
                stage_t[s] += time.perf_counter() - t
        for prec in precisions:  # fp32 first: the fp16 export converts the modules in place
            for s in group_stages:
                t = time.perf_counter()
                log.info(f"  {s}: export {prec}")
                result = export_stage(STAGES[s], wrap(s, modules[s]), out_dir, prec, dims=dims, opset=opset, inplace=True)
                summary.results.append(result)
                write_manifest(out_dir, [result], dims, opset, sources=sources)
                if validate:
                    log.info(f"  {s}: validate {prec} with onnxruntime")
                    rows = validate_stage(STAGES[s], None, result.path, dims=dims, precision=prec, cases=cases[s])
                    summary.rows.extend(rows)
                    worst = max(rows, key=lambda r: r.max_rel)
                    log.info(f"  {s}: {prec} {'pass' if all(r.passed for r in rows) else 'FAIL'} (worst max abs {worst.max_abs:.2e}, max rel {worst.max_rel:.2e})")
                stage_t[s] += time.perf_counter() - t
        summary.seconds.update(stage_t)
        done += len(group_stages)
        del modules, cases
        gc.collect()

    # 3. The runtime's model info beside the graphs, table, verdict.
    summary.manifest = Path(out_dir) / MANIFEST
    info.save(out_dir)  # the runtime reads scheduler/normalisation constants from beside the graphs
    if validate:
        order = {s: i for i, s in enumerate(STAGES)}
        summary.rows.sort(key=lambda r: (order[r.stage], r.precision != "fp32"))
        log.info("")
        log.info(format_table(summary.rows))
    total = sum(summary.seconds.values())
    log.info(f"exported {len(summary.results)} graph(s) in {total:.1f} s -> {out_dir}")
    if validate and not summary.passed:
        bad = sorted({f"{r.stage} {r.precision}" for r in summary.rows if not r.passed})
        raise ExportError(f"validation failed for {', '.join(bad)} (graphs were written; see the table above)")
    return summary


def write_manifest(out_dir: Path, results: Sequence[ExportResult], dims: ModelDims, opset: int,
                   sources: Mapping[str, Mapping[str, Any]] | None = None, withdraw: Iterable[tuple[str, str]] = ()) -> Path:
    """``export_manifest.json``: merged with an earlier manifest in the same folder (partial exports).

    ``results`` are added with their freshness record (``sources[stage]``, see
    :mod:`mimic.export.freshness`); ``withdraw`` removes (stage, precision) entries first."""
    path = Path(out_dir) / MANIFEST
    old = load_manifest(out_dir)
    same_model = old.get("model_dims") == _dims_dict(dims)
    stages = {s: dict(per) for s, per in old.get("stages", {}).items()} if same_model else {}
    for s, p in withdraw:
        stages.get(s, {}).pop(p, None)
    for r in results:
        entry = r.to_dict(relative_to=Path(out_dir))
        if sources is not None and r.stage in sources:
            entry["source"] = dict(sources[r.stage])
        stages.setdefault(r.stage, {})[r.precision] = entry
    data = {
        "schema": MANIFEST_SCHEMA,
        "exporter": EXPORTER,
        "opset": opset,
        "torch": torch.__version__,
        "model_dims": _dims_dict(dims),
        "profile_set": dims.profile_set,
        "stages": {s: stages[s] for s in sorted(stages) if stages[s]},
    }
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(out_dir: Path) -> tuple[ModelDims, dict]:
    """(model dims, manifest) of an export folder, for engine builds: ``engine_profile(spec, dims, ...)``."""
    path = Path(out_dir) / MANIFEST
    try:
        data = json.loads(path.read_text())
        return ModelDims(**data["model_dims"]), data
    except FileNotFoundError:
        raise InputError(f"{out_dir} is not an export folder (no {MANIFEST}): run `mimic export --out {out_dir}` first") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path} is unreadable ({err.__class__.__name__}): export again") from None


def _dims_dict(dims: ModelDims) -> dict:
    return {"embed_dim": dims.embed_dim, "pose_channels": dims.pose_channels, "latent_channels": dims.latent_channels,
            "clip_image_size": dims.clip_image_size, "cache_channels": dims.cache_channels}
