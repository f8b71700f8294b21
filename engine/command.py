"""``mimic build-engines`` and ``mimic validate`` (plus ``mimic refit-unet``).

    mimic build-engines (--weights DIR | --preset tiny) --out DIR [--shapes portrait-576,landscape-576]
                        [--window 16|72] [--target tensorrt|tensorrt-rtx] [--optimization-level N]
                        [--workspace-gb 8] [--timing-cache FILE] [--refittable] [--stage NAME ...]
    mimic validate --engines DIR [--points opt] [--inputs DIR]

build-engines: (1) checks every option and the TensorRT flavour before any work; (2) exports the
five PyTorch stages to FP16 ONNX through the export layer into ``OUT/onnx`` (skipped when the same
weights and export code produced them before); the DWPose models are used as shipped (fp32 ONNX);
(3) per stage: profiles from ``export.specs`` (narrowed to ``--shapes``/``--window``), the cache key,
a store lookup (``up to date`` -> nothing to do), else one build through ``engine/builder.py`` and an
atomic publish into OUT as ``<stage>.plan`` + ``<stage>.manifest.json``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

from mimic.engine import cache_key as ck
from mimic.engine.gpu import check_target, gpu_info, trt_info
from mimic.engine.store import EngineStore, atomic_write_json, describe_gpu_target
from mimic.errors import EngineError, InputError

# Output resolutions (pixels, H x W) the engines must cover. MimicMotion renders at a 576 short side.
SHAPE_PRESETS: Mapping[str, tuple[int, int]] = {"portrait-576": (1024, 576), "landscape-576": (576, 1024)}
DEFAULT_SHAPES = ("portrait-576", "landscape-576")
TINY_SHAPES = ("tiny",)
DEFAULT_WORKSPACE_GB = 8.0  # TensorRT #4360: the 72-frame MimicMotion UNet builds with an 8 GiB cap
EXPORT_PRECISION = "fp16"
ONNX_SUBDIR = "onnx"
SOURCE_FILE = "source.json"


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
    """``"portrait-576,landscape-576"`` / ``["tiny"]`` / ``"768x512"`` -> validated names."""
    if shapes is None or shapes == () or shapes == []:
        return TINY_SHAPES if preset == "tiny" else DEFAULT_SHAPES
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
    if name in SHAPE_PRESETS:
        return SHAPE_PRESETS[name]
    try:
        h, w = (int(v) for v in name.lower().split("x"))
    except ValueError:
        raise InputError(f"unknown shape {name!r}; use {', '.join(SHAPE_PRESETS)}, tiny, or HEIGHTxWIDTH (e.g. 1024x576)") from None
    if h < 64 or w < 64 or h % 64 or w % 64:
        raise InputError(f"shape {name}: height and width must be positive multiples of 64")
    return h, w


def stage_ranges(spec, profile_set: str, shapes: Sequence[str], window: int | None) -> list[dict]:
    """The spec's profile ranges narrowed to the requested resolutions and window length.

    H/W: min/max over the shapes, opt = the first one. With a window, the UNet's frames (F) and
    PoseNet's batch (N, one window of pose images) are fixed to it, and only the profiles whose
    range holds the window are kept (the real UNet has one profile per window length: a single
    profile with both F and H/W variable does not build, see export/specs.py).
    """
    from mimic.export.specs import DimRange

    sym = {"unet": "F", "pose_net": "N"}.get(spec.name)
    out = []
    for ranges in spec.profile_points(profile_set):
        r = dict(ranges)
        if shapes and shapes != TINY_SHAPES:
            hws = [shape_hw(s) for s in shapes]
            for axis, vals in (("H", [h for h, _ in hws]), ("W", [w for _, w in hws])):
                if axis in r:
                    r[axis] = DimRange(min(vals), vals[0], max(vals))
        if window and sym in r:
            if not r[sym].min <= window <= r[sym].max:
                continue
            r[sym] = DimRange(window, window, window)
        out.append(r)
    if not out:
        raise InputError(f"no {spec.name} profile covers a {window}-frame window (profile set {profile_set!r})")
    return out


def stage_profiles(spec, dims, profile_set: str, shapes: Sequence[str], window: int | None) -> list[dict]:
    """TensorRT profiles ``[{input: (min, opt, max)}]`` for one stage."""
    profiles = []
    for r in stage_ranges(spec, profile_set, shapes, window):
        pts = [{k: getattr(v, which) for k, v in r.items()} for which in ("min", "opt", "max")]
        profiles.append({t.name: tuple(t.shape(p, dims) for p in pts) for t in spec.inputs})
    return profiles


def build_stage_names(stages: Iterable[str] | None = None) -> tuple[str, ...]:
    from mimic.export.specs import ALL_STAGES

    if not stages:
        return tuple(ALL_STAGES)
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown:
        raise InputError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(ALL_STAGES)}")
    return tuple(s for s in ALL_STAGES if s in set(stages))


# ------------------------------------------------------------------------------------- export


def _export_code_digest() -> str:
    """Hash of the export layer's source: a change in export code re-exports (and so rebuilds)."""
    import mimic.export as export_pkg

    root = Path(export_pkg.__file__).parent
    return ck.key_of({p.name: ck.sha256_file(p) for p in sorted(root.glob("*.py"))})


def source_fingerprint(layout, svd_dir: Path) -> dict:
    """What the exported graphs were made from: weight file hashes + export code + torch version."""
    import torch

    from mimic.mimicmotion_ref.weights import SVD_FILES

    files = {"checkpoint": ck.sha256_file(Path(layout.checkpoint))}
    for rel in SVD_FILES:
        p = Path(svd_dir) / rel
        if p.is_file():
            files[f"svd/{rel}"] = ck.sha256_file(p)
    return {"weights": files, "export_code": _export_code_digest(), "torch": torch.__version__, "precision": EXPORT_PRECISION}


def export_onnx(layout, onnx_dir: Path, stages: Sequence[str], force: bool, log: Callable[[str], None]) -> tuple[dict[str, Path], object]:
    """FP16 ONNX for the exportable ``stages``; a stage is re-exported unless the same weights and
    export code made its graph (recorded per stage in ``onnx/source.json``)."""
    from mimic.export.command import MANIFEST, export_command
    from mimic.export.specs import ModelDims, onnx_filename
    from mimic.mimicmotion_ref.weights import fetch_svd

    svd_dir = fetch_svd(layout.svd)
    paths = {s: onnx_dir / onnx_filename(s, EXPORT_PRECISION) for s in stages}
    manifest = onnx_dir / MANIFEST
    if stages:
        source = source_fingerprint(layout, svd_dir)
        marker = onnx_dir / SOURCE_FILE
        old: dict = {}
        if marker.is_file():
            try:
                old = json.loads(marker.read_text())
            except ValueError:
                old = {}
        done = set(old.get("stages", [])) if old.get("source") == source and manifest.is_file() else set()
        todo = [s for s in stages if force or s not in done or not paths[s].is_file()]
        if not todo:
            log(f"ONNX: {len(paths)} fp16 graph(s) in {onnx_dir} are up to date (same weights and export code)")
        else:
            onnx_dir.mkdir(parents=True, exist_ok=True)
            if marker.exists():
                marker.unlink()  # withdrawn while graphs change: an interrupted export re-exports
            export_command(onnx_dir, layout=layout, precision=EXPORT_PRECISION, stages=list(todo), log=log)
            atomic_write_json(marker, {"source": source, "stages": sorted(done | set(todo))})
    dims = ModelDims(**json.loads(manifest.read_text())["model_dims"]) if manifest.is_file() else ModelDims.from_svd_dir(svd_dir)
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


def build_engines_command(
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
    log: Callable[[str], None] = print,
) -> BuildSummary:
    """Export (FP16 ONNX) and build one engine per stage into ``out_dir``; reuse up-to-date ones."""
    from mimic.engine.builder import BuildOptions, build_serialized_engine, load_trt
    from mimic.engine.refit import REFIT_KNOWN_ISSUE
    from mimic.export.command import check_output_dir, resolve_layout
    from mimic.export.specs import ALL_STAGES, STAGES

    # 1. Everything the user controls, before any work.
    check_target(target)
    wanted = build_stage_names(stages)
    shape_names = parse_shapes(shapes, preset)
    if window is not None and window < 2:
        raise InputError(f"--window must be >= 2 frames (16 or 72 for MimicMotion), got {window}")
    if workspace_gb is not None and workspace_gb <= 0:
        raise InputError(f"--workspace-gb must be positive, got {workspace_gb}")
    if not 0 <= optimization_level <= 5:
        raise InputError(f"--optimization-level must be 0-5, got {optimization_level}")
    load_trt(target)  # EngineError with install advice when missing
    tinfo = trt_info(target)
    gpu = gpu_info(0)
    gpu_key = ck.gpu_target(target, gpu, tuple(compute_capabilities) or None)  # tensorrt without a GPU: clear error here
    if refittable and target == "tensorrt-rtx" and gpu is None:
        raise EngineError("refittable TensorRT-RTX builds need a GPU (REFIT engines fail to build in the CPU-only ahead-of-time mode); "
                          "build without --refittable or on a GPU machine")
    out = check_output_dir(Path(out_dir))
    store = EngineStore(out)
    store.clean_temps()
    layout = resolve_layout(preset, Path(weights) if weights is not None else None, layout)
    if window is None and preset == "tiny":
        from mimic.mimicmotion_ref.tiny import TINY_GENERATION

        window = TINY_GENERATION.window
    elif window is None:
        window = 72
    summary = BuildSummary(out_dir=out, target=target)
    log(f"building {len(wanted)} engine(s) with {tinfo.describe()} into {out}")
    log(f"  target: {describe_gpu_target(gpu_key)}; shapes {', '.join(shape_names)}; window {window}; "
        f"optimization level {optimization_level}; workspace {'uncapped' if workspace_gb is None else f'{workspace_gb:g} GiB'}")

    # 2. ONNX: the five PyTorch stages exported as FP16; DWPose as shipped.
    t0 = time.perf_counter()
    onnx_dir = out / ONNX_SUBDIR
    exportable = [s for s in wanted if s in STAGES]
    onnx_paths, dims = export_onnx(layout, onnx_dir, exportable, force, log)
    summary.export_seconds = time.perf_counter() - t0
    onnx_paths.update({"dwpose_detector": Path(layout.det_model), "dwpose_pose": Path(layout.pose_model)})
    profile_set = "tiny" if shape_names == TINY_SHAPES else "real"

    # 3. One engine per stage.
    tc_path = None
    if use_timing_cache:
        if timing_cache is not None:
            tc_path = Path(timing_cache)
        elif target == "tensorrt":
            tc_path = store.timing_cache_path(target, tinfo.version, gpu.compute_capability if gpu else None)
        else:
            log("  timing cache: not used (TensorRT-RTX has no timing cache; its runtime cache is filled at load)")
    for i, stage in enumerate(wanted, 1):
        spec = ALL_STAGES[stage]
        tag = f"[{i}/{len(wanted)}] {stage}"
        onnx_path = onnx_paths[stage]
        if not onnx_path.is_file():
            raise EngineError(f"{stage}: ONNX model {onnx_path} not found")
        precision = EXPORT_PRECISION if stage in STAGES else "fp32"
        profiles = stage_profiles(spec, dims, profile_set, shape_names, window)
        unet_refit = refittable and stage == "unet"
        options = BuildOptions(
            target=target,
            workspace_bytes=None if workspace_gb is None else int(workspace_gb * (1 << 30)),
            optimization_level=optimization_level,
            timing_cache=tc_path,
            refittable=unet_refit,
            compute_capabilities=tuple(compute_capabilities),
        )
        fingerprint = ck.onnx_fingerprint(onnx_path)
        key, key_in = ck.cache_key(stage, fingerprint, ck.build_spec(profiles, options), tinfo, gpu_key)
        hit = None if force else store.lookup(stage, key)
        if hit is not None:
            log(f"{tag}: up to date ({hit['plan']['size'] / 1e6:.1f} MB, key {key[:12]})")
            summary.stages.append(StageBuild(stage, "up to date", 0.0, int(hit["plan"]["size"]), key))
            continue
        log(f"{tag}: building from {onnx_path.name} ({precision}; {_fmt_profile(profiles[0])})")
        if unet_refit:
            log(f"  refittable (BuilderFlag.REFIT): {REFIT_KNOWN_ISSUE}")
        with store.lock(stage):
            hit = None if force else store.lookup(stage, key)  # another process may have built it meanwhile
            if hit is not None:
                log(f"{tag}: up to date (built by another process)")
                summary.stages.append(StageBuild(stage, "up to date", 0.0, int(hit["plan"]["size"]), key))
                continue
            t = time.perf_counter()
            plan = build_serialized_engine(onnx_path, profiles, options, log)
            seconds = time.perf_counter() - t
            onnx_info = {
                "path": _relative(onnx_path, out),
                "precision": precision,
                "sha256": fingerprint["sha256"],
                "files": fingerprint["files"],
            }
            io = {"inputs": list(spec.input_names), "outputs": list(spec.output_names)}
            store.publish(stage, plan, key, key_in, onnx=onnx_info, build_seconds=seconds, io=io,
                          extra={"refit": {"mode": "swap", "note": REFIT_KNOWN_ISSUE}} if unet_refit else None)
        log(f"{tag}: built in {seconds:.1f} s ({len(plan) / 1e6:.1f} MB) -> {store.plan_path(stage).name}")
        summary.stages.append(StageBuild(stage, "built", seconds, len(plan), key))
    n_built = len(summary.built)
    log(f"done: {n_built} built, {len(summary.stages) - n_built} up to date -> {out}")
    return summary


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


# ---------------------------------------------------------------------------------- refit CLI


def refit_unet_command(engines: str | Path, *, preset: str | None = None, weights: str | Path | None = None,
                       checkpoint: str | Path | None = None, verify: bool = True, log: Callable[[str], None] = print) -> dict:
    """Export the UNet of other weights (same architecture) and refit the published refittable UNet."""
    from mimic.engine.gpu import require_gpu
    from mimic.engine.refit import swap_weights
    from mimic.export.command import export_command
    from mimic.mimicmotion_ref.presets import layout_from_options

    require_gpu("mimic refit-unet")
    layout = layout_from_options(preset=preset, weights=Path(weights) if weights else None, checkpoint=Path(checkpoint) if checkpoint else None)
    onnx_dir = Path(engines) / "onnx-refit"
    summary = export_command(onnx_dir, layout=layout, precision=EXPORT_PRECISION, stages=["unet"], log=log)
    return swap_weights(engines, summary.results[0].path, "unet", verify=verify, log=log)


# -------------------------------------------------------------------------------------- typer


BUILD_HELP = """Export FP16 ONNX and build one TensorRT engine per stage into OUT.

Stages: image_encoder, vae_encoder, pose_net, unet, vae_decoder and the two DWPose models. Each
engine is published as OUT/<stage>.plan + OUT/<stage>.manifest.json; a second run reuses engines
whose cache key (ONNX bytes, build options, TensorRT version, GPU) is unchanged ("up to date").
--target tensorrt-rtx builds ahead of time without a GPU (consumer GPUs sm_80/86/89/120)."""

VALIDATE_HELP = """Run every engine in DIR against onnxruntime on the same ONNX (GPU needed).

Every manifest and plan is checked first (works without a GPU; --check-only stops there). Prints max abs / relative error, PSNR for decoded frames and NaN counts per output; exits non-zero
when a stage is outside its tolerance."""


def register(app) -> None:
    """Add ``mimic build-engines``, ``mimic validate`` and ``mimic refit-unet`` to a typer app."""
    import typer

    @app.command("build-engines", help=BUILD_HELP)
    def build_engines(
        out: Path = typer.Option(..., "--out", help="Engine folder (plans, manifests, onnx/)."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="Upstream weights folder (SVD/, MimicMotion_1-1.pth, DWPose/)."),
        preset: Optional[str] = typer.Option(None, "--preset", help="Built-in weights: tiny."),
        shapes: Optional[str] = typer.Option(None, "--shapes", help="Resolutions to cover: portrait-576,landscape-576 (default), HxW, or tiny."),
        window: Optional[int] = typer.Option(None, "--window", help="Frames per UNet window: 16 or 72 (default 72; tiny: 16)."),
        target: str = typer.Option("tensorrt", "--target", help="tensorrt (TensorRT 11, needs the GPU) | tensorrt-rtx (ahead of time, CPU ok)."),
        optimization_level: int = typer.Option(3, "--optimization-level", help="Builder optimization level 0-5."),
        workspace_gb: float = typer.Option(DEFAULT_WORKSPACE_GB, "--workspace-gb", help="Workspace cap per build, GiB (8 by default: the 72-frame UNet needs a cap, TensorRT #4360)."),
        timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache file (default: OUT/timing-cache/<trt>-<sm>.cache)."),
        no_timing_cache: bool = typer.Option(False, "--no-timing-cache", help="Build without a timing cache (deployment builds)."),
        refittable: bool = typer.Option(False, "--refittable", help="Build the UNet refittable (swap checkpoints with `mimic refit-unet`)."),
        compute_capability: Optional[list[str]] = typer.Option(None, "--compute-capability", help="TensorRT-RTX target SMs, e.g. 8.6 (repeatable; default: its portable set)."),
        stage: Optional[list[str]] = typer.Option(None, "--stage", help="Only these stages (repeatable)."),
        force: bool = typer.Option(False, "--force", help="Re-export and rebuild even when up to date."),
    ) -> None:
        build_engines_command(out, preset=preset, weights=weights, shapes=shapes, window=window, target=target,
                              optimization_level=optimization_level, workspace_gb=workspace_gb, timing_cache=timing_cache,
                              use_timing_cache=not no_timing_cache, refittable=refittable, stages=stage or None, force=force,
                              compute_capabilities=tuple(compute_capability or ()), log=typer.echo)

    @app.command("validate", help=VALIDATE_HELP)
    def validate(
        engines: Path = typer.Option(..., "--engines", help="Engine folder written by build-engines."),
        stage: Optional[list[str]] = typer.Option(None, "--stage", help="Only these stages (repeatable)."),
        points: str = typer.Option("opt", "--points", help="Profile shape points to test: any of min,opt,max."),
        inputs: Optional[Path] = typer.Option(None, "--inputs", help="Folder of real inputs saved as <stage>.pt (dict of tensors)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random inputs."),
        check_only: bool = typer.Option(False, "--check-only", help="Only check manifests and plans (no GPU needed)."),
        tolerance_scale: float = typer.Option(2.0, "--tolerance-scale", help="Multiple of the export specs' fp16 tolerances allowed (TensorRT vs onnxruntime)."),
    ) -> None:
        from mimic.engine.validate import check_engines, validate_engines

        if check_only:
            check_engines(engines, stages=stage or None, echo=typer.echo)
            return
        validate_engines(engines, stages=stage or None, points=[p.strip() for p in points.split(",") if p.strip()],
                         inputs_dir=inputs, seed=seed, tolerance_scale=tolerance_scale, echo=typer.echo)

    @app.command("refit-unet", help="Swap the weights of a refittable UNet engine (e.g. MimicMotion 1.0 <-> 1.1) without a rebuild (GPU).")
    def refit_unet(
        engines: Path = typer.Option(..., "--engines", help="Engine folder with a refittable unet (build-engines --refittable)."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="Weights folder with the new checkpoint."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="The new MimicMotion checkpoint (.pth)."),
        preset: Optional[str] = typer.Option(None, "--preset", help="Built-in weights: tiny."),
        no_verify: bool = typer.Option(False, "--no-verify", help="Skip the comparison with a fresh build (not recommended)."),
    ) -> None:
        refit_unet_command(engines, preset=preset, weights=weights, checkpoint=checkpoint, verify=not no_verify, log=typer.echo)
