"""``mimic build-engines``: export FP16 ONNX and build one engine per stage (plus ``mimic refit-unet``).

    mimic build-engines (--weights DIR | --preset tiny) --out DIR [--shapes portrait-576,landscape-576]
                        [--window 16|72] [--target tensorrt|tensorrt-rtx] [--optimization-level N]
                        [--workspace-gib 8] [--timing-cache FILE] [--refittable] [--stage NAME ...]

build-engines: (1) checks every option, the window against every stage's profile range and the
TensorRT flavour before any work; (2) exports the PyTorch stages to FP16 ONNX through the
export layer into ``OUT/onnx`` (skipped when the export manifest's freshness record says the same
weights and export code produced them, :func:`mimic.export.freshness.up_to_date`); the DWPose
models are used as shipped (fp32 ONNX); (3) per stage: one optimization profile from
:func:`mimic.spec.engine_profile` (narrowed to ``--shapes``, frames fixed to ``--window``), the
cache key, a store lookup (``up to date`` -> nothing to do), else one build through
``engine/builder.py`` and an atomic publish into OUT as ``<stage>.plan`` + ``<stage>.manifest.json``.
Progress goes to this module's logger.

The default stage list is every stage, deep-feature caching's ``unet_features`` and
``unet_shallow`` included: two more UNet builds (the first as long as ``unet``'s, the second much
shorter) and two more plans; ``--stage`` leaves them out for a folder that serves no caching job.
``--refittable`` makes every engine with UNet weights refittable (:mod:`mimic.engine.refit`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from mimic.engine import cache_key as ck
from mimic.engine.gpu import check_target, gpu_info, trt_info
from mimic.engine.store import REBUILD_FIELD, EngineStore, describe_gpu_target
from mimic.errors import EngineError, InputError
from mimic.spec import DEFAULT_WORKSPACE_GB
from mimic.export.freshness import MANIFEST, up_to_date
from mimic.files import file_lock
from mimic.spec import ALL_STAGES, DEFAULT_WINDOW, STAGES, ModelDims, StageName, engine_profile, engine_ranges, onnx_filename

log = logging.getLogger(__name__)

# Output resolutions (pixels, (height, width)) the engines must cover. MimicMotion renders at a 576 short side.
SHAPE_PRESETS: Mapping[str, tuple[int, int]] = {"portrait-576": (1024, 576), "landscape-576": (576, 1024)}
DEFAULT_SHAPES = ("portrait-576", "landscape-576")
TINY_SHAPES = ("tiny",)
EXPORT_PRECISION = "fp16"
BUILD_PRECISIONS = ("fp16", "fp8", "int8")  # fp8/int8: the UNet from `mimic quantize`'s Q/DQ graph, the rest fp16
ONNX_SUBDIR = "onnx"


@dataclass
class StageBuild:
    stage: str
    status: str  # "built" | "up to date"
    seconds: float
    plan_bytes: int
    cache_key: str


@dataclass
class BuildSummary:
    out_dir: Path
    target: str
    stages: list[StageBuild] = field(default_factory=list)
    export_seconds: float = 0.0

    @property
    def built(self) -> list[str]:
        return [s.stage for s in self.stages if s.status == "built"]


# ------------------------------------------------------------------------------------ options


def parse_shapes(shapes: str | Sequence[str] | None, preset: str | None) -> tuple[str, ...]:
    """``"portrait-576,landscape-576"`` / ``["tiny"]`` / ``"768x512"`` -> validated names. Without
    ``--shapes``: the preset's own (its registry entry), else the released sizes."""
    if shapes is None or shapes == () or shapes == []:
        if preset is None:
            return DEFAULT_SHAPES
        from mimic.model.presets import preset_named

        return parse_shapes(preset_named(preset).shapes, None)
    items = shapes.split(",") if isinstance(shapes, str) else [p for s in shapes for p in str(s).split(",")]
    items = tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
    if not items:
        raise InputError("--shapes is empty")
    if "tiny" in items and len(items) > 1:
        raise InputError("--shapes tiny (the tiny preset's profile set) cannot be combined with other shapes")
    for s in items:
        if s != "tiny":
            shape_hw(s)
    return items


def shape_hw(name: str) -> tuple[int, int]:
    """A shape name (``landscape-576``) or ``WIDTHxHEIGHT`` (``1024x576``: landscape) -> (height, width)."""
    if name in SHAPE_PRESETS:
        return SHAPE_PRESETS[name]
    try:
        w, h = (int(v) for v in name.lower().split("x"))
    except ValueError:
        raise InputError(f"unknown shape {name!r}; use {', '.join(SHAPE_PRESETS)}, tiny, or WIDTHxHEIGHT (e.g. 1024x576)") from None
    if h < 64 or w < 64 or h % 64 or w % 64:
        raise InputError(f"shape {name} (WIDTHxHEIGHT): width and height must be positive multiples of 64")
    return h, w


def hw_sizes(shapes: Sequence[str]) -> list[tuple[int, int]]:
    """The (height, width) pixel sizes of validated shape names; [] for the tiny profile set."""
    return [] if tuple(shapes) == TINY_SHAPES else [shape_hw(s) for s in shapes]


def profile_set_of(shapes: Sequence[str]) -> str:
    return "tiny" if tuple(shapes) == TINY_SHAPES else "real"


def build_stage_names(stages: Iterable[str] | None = None) -> tuple[str, ...]:
    if not stages:
        return tuple(ALL_STAGES)
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown:
        raise InputError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(ALL_STAGES)}")
    return tuple(s for s in ALL_STAGES if s in set(stages))


# ------------------------------------------------------------------------------------- export


def export_onnx(layout, onnx_dir: Path, stages: Sequence[str], force: bool) -> tuple[dict[str, Path], ModelDims]:
    """FP16 ONNX for the exportable ``stages``; a stage is re-exported unless the export manifest
    in ``onnx_dir`` records that the same weights and export code made its graph."""
    from mimic.export.exporter import export_weight_set, read_manifest
    from mimic.model.model_info import ModelInfo
    from mimic.model.weights import fetch_svd

    svd_dir = fetch_svd(layout.svd)
    paths = {s: onnx_dir / onnx_filename(s, EXPORT_PRECISION) for s in stages}
    if stages:
        onnx_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(onnx_dir / ".export.lock"):  # two builds into one folder export once
            todo = list(stages) if force else up_to_date(onnx_dir, layout, stages, EXPORT_PRECISION)
            if not todo:
                log.info(f"ONNX: {len(paths)} fp16 graph(s) in {onnx_dir} are up to date (same weights and export code)")
            else:
                export_weight_set(onnx_dir, layout=layout, precision=EXPORT_PRECISION, stages=todo)
    dims = read_manifest(onnx_dir)[0] if (onnx_dir / MANIFEST).is_file() else ModelInfo.from_svd_dir(svd_dir).dims
    return paths, dims


# -------------------------------------------------------------------------------------- build


def _fmt_profile(profile: Mapping[str, tuple]) -> str:
    parts = []
    for name, (mn, opt, mx) in profile.items():
        if tuple(mn) == tuple(mx):
            parts.append(f"{name} {'x'.join(map(str, mn))}")
        else:
            parts.append(f"{name} {'x'.join(map(str, mn))}..{'x'.join(map(str, mx))} (opt {'x'.join(map(str, opt))})")
    return "; ".join(parts)


def static_profile(spec, dims: ModelDims) -> dict[str, tuple]:
    """The fixed input shapes of a static graph, in profile form (for messages)."""
    return {t.name: (t.shape({}, dims),) * 3 for t in spec.inputs}


def build_engine_set(
    out_dir: str | Path,
    *,
    preset: str | None = None,
    weights: str | Path | None = None,
    layout=None,
    shapes: str | Sequence[str] | None = None,
    window: int | None = None,
    target: str = "tensorrt",
    optimization_level: int = 3,
    workspace_gb: float | None = DEFAULT_WORKSPACE_GB,
    timing_cache: str | Path | None = None,
    use_timing_cache: bool = True,
    refittable: bool = False,
    stages: Sequence[str] | None = None,
    force: bool = False,
    compute_capabilities: Sequence[str] = (),
    svd: str | None = None,
    checkpoint: str | Path | None = None,
    det_model: str | Path | None = None,
    pose_model: str | Path | None = None,
    precision: str = EXPORT_PRECISION,
    quantized: str | Path | None = None,
) -> BuildSummary:
    """Export (FP16 ONNX) and build one engine per stage into ``out_dir``; reuse up-to-date ones.

    ``precision`` ``fp8``/``int8``: the UNet builds from the Q/DQ graph ``mimic quantize --out
    QUANTIZED`` wrote (strongly typed: the 8-bit precision is the graph's Q/DQ nodes; optimisation
    level 4 unless another is given; TensorRT-RTX targets compute capability 8.9 and 12.0 by default);
    its cache key and manifest hold the precision and the calibration. Every other stage, the
    cached-step pair included, stays FP16."""
    from mimic.engine.builder import BuildOptions, build_serialized_engine, check_compute_capabilities, load_trt
    from mimic.engine.refit import REFIT_KNOWN_ISSUE, UNET_WEIGHT_STAGES
    from mimic.export.exporter import check_output_dir, resolve_layout

    # 1. Everything the user controls, before any work.
    check_target(target)
    quant = None
    if precision not in BUILD_PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(BUILD_PRECISIONS)}, got {precision!r}")
    if precision != EXPORT_PRECISION:
        from mimic.engine import quant_build as qb

        if quantized is None:
            raise InputError(f"--precision {precision} builds the UNet from `mimic quantize --precision {precision} --out DIR`: give --quantized DIR")
        if target == "tensorrt-rtx" and not compute_capabilities:
            compute_capabilities = qb.QUANT_SMS
        qb.check_quant_targets(precision, target, tuple(compute_capabilities))
        fields = qb.quant_manifest_fields(Path(quantized), precision)
        quant = {"onnx": qb.qdq_onnx(Path(quantized), precision), "fields": fields, "key": qb.quant_build_spec_extra(fields)}
        if optimization_level == 3:  # the default: NVIDIA's 8-bit UNets build at level 4
            optimization_level = qb.QUANT_OPTIMIZATION_LEVEL
    elif quantized is not None:
        raise InputError("--quantized is for --precision fp8 or int8 (the UNet's Q/DQ graph)")
    wanted = build_stage_names(stages)
    shape_names = parse_shapes(shapes, preset)
    if window is not None and window < 2:
        raise InputError(f"--window must be >= 2 frames (16 or 72 for MimicMotion), got {window}")
    if window is None and preset is not None:
        from mimic.model.presets import default_generation

        window = default_generation(preset).window
    elif window is None:
        window = DEFAULT_WINDOW
    profile_set, sizes = profile_set_of(shape_names), hw_sizes(shape_names)
    for stage in wanted:  # a window outside a stage's range: InputError now, not after the export
        engine_ranges(ALL_STAGES[stage], profile_set, window, sizes)
    if workspace_gb is not None and workspace_gb <= 0:
        raise InputError(f"--workspace-gib must be positive, got {workspace_gb:g}")
    if not 0 <= optimization_level <= 5:
        raise InputError(f"--optimization-level must be 0-5, got {optimization_level}")
    if compute_capabilities and target != "tensorrt-rtx":
        raise InputError("--compute-capability is a --target tensorrt-rtx option (TensorRT builds for the GPU it runs on)")
    trt = load_trt(target)  # EngineError with install advice when missing
    check_compute_capabilities(trt, tuple(compute_capabilities))  # an SM this TensorRT cannot target: now, not after the export
    tinfo = trt_info(target)
    gpu = gpu_info(0)
    gpu_key = ck.gpu_target(target, gpu, tuple(compute_capabilities) or None)  # tensorrt without a GPU: clear error here
    if refittable and target == "tensorrt-rtx" and gpu is None:
        raise EngineError("refittable TensorRT-RTX builds need a GPU (REFIT engines fail to build in the CPU-only ahead-of-time mode); "
                          "build without --refittable or on a GPU machine")
    out = check_output_dir(Path(out_dir))
    store = EngineStore(out)
    store.clean_temps()
    layout = resolve_layout(preset, Path(weights) if weights is not None else None, layout, svd=svd, checkpoint=checkpoint,
                            det_model=det_model, pose_model=pose_model)
    summary = BuildSummary(out_dir=out, target=target)
    # How to rebuild this folder: every hint that says "rebuild" pastes the user's own options.
    rebuild = rebuild_args(preset=preset, weights=weights, svd=svd, checkpoint=checkpoint, det_model=det_model, pose_model=pose_model,
                           shapes=shapes, window=window, target=target, optimization_level=optimization_level, workspace_gb=workspace_gb,
                           timing_cache=timing_cache, use_timing_cache=use_timing_cache, refittable=refittable,
                           compute_capabilities=compute_capabilities, precision=precision, quantized=quantized)
    log.info(f"building {len(wanted)} engine(s) with {tinfo.describe()} into {out}")
    log.info(f"  target: {describe_gpu_target(gpu_key)}; shapes {', '.join(shape_names)}; window {window}; "
             f"optimization level {optimization_level}; workspace {'uncapped' if workspace_gb is None else f'{workspace_gb:g} GiB'}")

    # 2. ONNX: the PyTorch stages exported as FP16; DWPose as shipped.
    t0 = time.perf_counter()
    onnx_dir = out / ONNX_SUBDIR
    exportable = [s for s in wanted if s in STAGES and not (quant is not None and s == StageName.UNET)]  # an 8-bit UNet: its Q/DQ graph
    onnx_paths, dims = export_onnx(layout, onnx_dir, exportable, force)
    if quant is not None:
        onnx_paths[StageName.UNET] = quant["onnx"]
    summary.export_seconds = time.perf_counter() - t0
    onnx_paths.update({StageName.DWPOSE_DETECTOR: Path(layout.det_model), StageName.DWPOSE_POSE: Path(layout.pose_model)})

    # 3. One engine per stage.
    tc_path = None
    if use_timing_cache:
        if timing_cache is not None:
            tc_path = Path(timing_cache)
        elif target == "tensorrt":
            tc_path = store.timing_cache_path(target, tinfo.version, gpu.compute_capability if gpu else None)
        else:
            log.info("  timing cache: not used (TensorRT-RTX has no timing cache; its runtime cache is filled at load)")
    for i, stage in enumerate(wanted, 1):
        spec = ALL_STAGES[stage]
        tag = f"[{i}/{len(wanted)}] {stage}"
        onnx_path = onnx_paths[stage]
        eight_bit = quant is not None and stage == StageName.UNET
        if not onnx_path.is_file():
            raise EngineError(f"{stage}: ONNX model {onnx_path} not found")
        graph_precision = precision if eight_bit else EXPORT_PRECISION if stage in STAGES else "fp32"
        profile = engine_profile(spec, dims, profile_set, window, sizes)  # None: a static graph (DWPose)
        unet_refit = refittable and stage in UNET_WEIGHT_STAGES
        options = BuildOptions(
            target=target,
            workspace_bytes=None if workspace_gb is None else int(workspace_gb * (1 << 30)),
            optimization_level=optimization_level,
            timing_cache=tc_path,
            refittable=unet_refit,
            compute_capabilities=tuple(compute_capabilities),
        )
        fingerprint = ck.onnx_fingerprint(onnx_path)
        key, key_in = ck.cache_key(stage, fingerprint, ck.build_spec(profile, options, quant["key"] if eight_bit else None), tinfo, gpu_key)
        hit = None if force else store.lookup(stage, key)
        if hit is not None:
            log.info(f"{tag}: up to date ({hit['plan']['size'] / 1e6:.1f} MB, key {key[:12]})")
            summary.stages.append(StageBuild(stage, "up to date", 0.0, int(hit["plan"]["size"]), key))
            continue
        log.info(f"{tag}: building from {onnx_path.name} ({graph_precision}; {_fmt_profile(profile or static_profile(spec, dims))})")
        if unet_refit:
            log.info(f"  refittable (BuilderFlag.REFIT): {REFIT_KNOWN_ISSUE}")
        with store.lock(stage):
            hit = None if force else store.lookup(stage, key)  # another process may have built it meanwhile
            if hit is not None:
                log.info(f"{tag}: up to date (built by another process)")
                summary.stages.append(StageBuild(stage, "up to date", 0.0, int(hit["plan"]["size"]), key))
                continue
            t = time.perf_counter()
            plan = build_serialized_engine(onnx_path, profile, options)
            seconds = time.perf_counter() - t
            onnx_info = {
                "path": _relative(onnx_path, out),
                "precision": graph_precision,
                "sha256": fingerprint["sha256"],
                "files": fingerprint["files"],
            }
            io = {"inputs": list(spec.input_names), "outputs": list(spec.output_names)}
            extra = {REBUILD_FIELD: rebuild}
            if eight_bit:
                extra["quantization"] = quant["fields"]
            if unet_refit:
                extra["refit"] = {"mode": "swap", "note": REFIT_KNOWN_ISSUE}
            store.publish(stage, plan, key, key_in, onnx=onnx_info, build_seconds=seconds, io=io, extra=extra)
        log.info(f"{tag}: built in {seconds:.1f} s ({len(plan) / 1e6:.1f} MB) -> {store.plan_path(stage).name}")
        summary.stages.append(StageBuild(stage, "built", seconds, len(plan), key))
    n_built = len(summary.built)
    log.info(f"done: {n_built} built, {len(summary.stages) - n_built} up to date -> {out}")
    return summary


def rebuild_args(*, preset, weights, svd, checkpoint, det_model, pose_model, shapes, window, target, optimization_level, workspace_gb,
                 timing_cache, use_timing_cache, refittable, compute_capabilities, precision=EXPORT_PRECISION, quantized=None) -> list[str]:
    """The ``build-engines`` options (all but --out, --stage and --force) that made these engines,
    with absolute paths: recorded in every manifest for the store's rebuild hints."""
    def path(p) -> str:
        return str(Path(p).expanduser().resolve())

    args: list[str] = []
    if preset is not None:
        args += ["--preset", preset]
    for flag, value in (("--weights", weights), ("--checkpoint", checkpoint), ("--det-model", det_model), ("--pose-model", pose_model)):
        if value is not None:
            args += [flag, path(value)]
    if svd is not None:  # a folder or a hub id
        args += ["--svd", path(svd) if Path(svd).expanduser().exists() else str(svd)]
    if shapes:
        args += ["--shapes", shapes if isinstance(shapes, str) else ",".join(shapes)]
    args += ["--window", str(window), "--target", target]
    if optimization_level != 3:
        args += ["--optimization-level", str(optimization_level)]
    if workspace_gb != DEFAULT_WORKSPACE_GB and workspace_gb is not None:
        args += ["--workspace-gib", f"{workspace_gb:g}"]
    if not use_timing_cache:
        args.append("--no-timing-cache")
    elif timing_cache is not None:
        args += ["--timing-cache", path(timing_cache)]
    if refittable:
        args.append("--refittable")
    for cc in compute_capabilities:
        args += ["--compute-capability", cc]
    if precision != EXPORT_PRECISION:
        args += ["--precision", precision, "--quantized", path(quantized)]
    return args


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


# ---------------------------------------------------------------------------------- refit CLI


def refit_unet_engine(engines: str | Path, *, preset: str | None = None, weights: str | Path | None = None,
                       checkpoint: str | Path | None = None, svd: str | None = None, verify: bool = True) -> dict[str, dict]:
    """Export the UNet graphs of other weights (same architecture) and refit every published engine
    that carries UNet weights (``unet``, and ``unet_features`` / ``unet_shallow`` when present), so
    the folder never mixes checkpoints. Returns ``{stage: new manifest}``."""
    from mimic.engine.gpu import require_gpu
    from mimic.engine.refit import UNET_WEIGHT_STAGES, swap_weights
    from mimic.export.exporter import export_weight_set
    from mimic.model.presets import layout_from_options

    require_gpu("mimic refit-unet")
    store = EngineStore(engines)
    present = [s for s in UNET_WEIGHT_STAGES if s in store.stages()]
    if not present:
        raise EngineError(f"no UNet engine in {store.root}; build one with `mimic build-engines --refittable --out {store.root}`")
    fixed = [s for s in present if not store.read_manifest(s)["key_inputs"]["build"]["options"].get("refittable")]
    if fixed:
        mixed = "refitting only the others would mix checkpoints; " if len(fixed) < len(present) else ""
        raise EngineError(f"UNet engine(s) {', '.join(fixed)} in {store.root} are not refittable (built without --refittable): {mixed}"
                          "rebuild with `mimic build-engines --refittable` first")
    layout = layout_from_options(preset=preset, weights=Path(weights) if weights else None, svd=svd, checkpoint=Path(checkpoint) if checkpoint else None)
    onnx_dir = Path(engines) / "onnx-refit"
    summary = export_weight_set(onnx_dir, layout=layout, precision=EXPORT_PRECISION, stages=present)
    graphs = {r.stage: r.path for r in summary.results}
    return {s: swap_weights(engines, graphs[s], s, verify=verify) for s in present}
