"""``mimic build-engines``, ``mimic validate`` and ``mimic refit-unet``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mimic.commands import options as opt

from mimic.commands.conventions import ENGINE_STAGES, choices, in_range, targets
from mimic.engine.gpu import RTX_DEFAULT_SMS
from mimic.spec import DEFAULT_WORKSPACE_GB

BUILD_HELP = f"""Export FP16 ONNX and build one TensorRT engine per stage into OUT.

Stages: {', '.join(ENGINE_STAGES)}. Each engine is published as OUT/<stage>.plan +
OUT/<stage>.manifest.json; a second run reuses engines whose cache key (ONNX bytes, build options,
TensorRT version, GPU) is unchanged ("up to date"). unet_features and unet_shallow serve
deep-feature caching (two more UNet builds; leave them out with --stage). --target tensorrt-rtx
builds ahead of time without a GPU (consumer GPUs sm_80/86/89/120). Every option is checked before
the export starts."""

VALIDATE_HELP = """Run every engine in DIR against onnxruntime on the same ONNX (GPU needed).

Every manifest and plan is checked first (works without a GPU; --check-only stops there). Prints
max abs / relative error, PSNR for decoded frames and NaN counts per output; exits non-zero when a
stage is outside its tolerance."""


app = typer.Typer()


@app.command("build-engines", help=BUILD_HELP)
def build_engines(
    out: Path = typer.Option(..., "--out", help="Engine folder (plans, manifests, onnx/)."),
    weights: opt.Weights = None,
    preset: opt.Preset = None,
    svd: opt.Svd = None,
    checkpoint: opt.Checkpoint = None,
    det_model: opt.DetModel = None,
    pose_model: opt.PoseModel = None,
    shapes: Optional[str] = typer.Option(None, "--shapes", metavar="SHAPES",
                                         help="Resolutions to cover, comma-separated: portrait-576, landscape-576 (the default: both), "
                                              "WIDTHxHEIGHT (multiples of 64, e.g. 1024x576), or tiny (the tiny preset's default)."),
    window: Optional[int] = typer.Option(None, "--window", help=f"Frames per UNet window (default: the preset's window, 72 with --weights; 16 for MimicMotion 1.0). {in_range(2)}"),
    target: str = typer.Option("tensorrt", "--target", metavar=choices(targets()),
                               help="tensorrt: TensorRT 11, built on the GPU it runs on; tensorrt-rtx: ahead of time, a CPU is enough."),
    optimization_level: int = typer.Option(3, "--optimization-level", help=f"Builder optimization level. {in_range(0, 5)}"),
    workspace_gib: float = typer.Option(DEFAULT_WORKSPACE_GB, "--workspace-gib", help="Workspace cap per build in GiB, > 0 (the 72-frame UNet needs a cap, TensorRT #4360)."),
    workspace_gb: Optional[float] = typer.Option(None, "--workspace-gb", hidden=True, help="Old name of --workspace-gib."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache file (default: OUT/timing-cache/<trt>-<sm>.cache)."),
    no_timing_cache: bool = typer.Option(False, "--no-timing-cache", help="Build without a timing cache (deployment builds)."),
    refittable: bool = typer.Option(False, "--refittable", help="Build the engines with UNet weights (unet, unet_features, unet_shallow) "
                                                                 "refittable (swap checkpoints with `mimic refit-unet`)."),
    compute_capability: Optional[list[str]] = typer.Option(None, "--compute-capability", metavar="X.Y",
                                                           help=f"TensorRT-RTX target SMs, e.g. 8.6 (repeatable; default: its portable set {', '.join(RTX_DEFAULT_SMS)})."),
    stage: Optional[list[str]] = typer.Option(None, "--stage", metavar="STAGE", help=f"Only these stages (repeatable; default: all): {', '.join(ENGINE_STAGES)}."),
    force: bool = typer.Option(False, "--force", help="Re-export and rebuild even when up to date."),
    precision: str = typer.Option("fp16", "--precision", metavar="fp16|fp8|int8",
                                  help="fp16 (every stage), or fp8/int8: the UNet from the Q/DQ graph of `mimic quantize` (--quantized), "
                                       "strongly typed, optimization level 4; every other stage fp16. TensorRT-RTX FP8 needs compute capability >= 8.9."),
    quantized: Optional[Path] = typer.Option(None, "--quantized", help="The `mimic quantize --out` folder (with --precision fp8 or int8)."),
) -> None:
    from mimic.engine.build import build_engine_set

    build_engine_set(out, preset=preset, weights=weights, svd=svd, checkpoint=checkpoint, det_model=det_model, pose_model=pose_model,
                          shapes=shapes, window=window, target=target, optimization_level=optimization_level,
                          workspace_gb=workspace_gb if workspace_gb is not None else workspace_gib, timing_cache=timing_cache,
                          use_timing_cache=not no_timing_cache, refittable=refittable, stages=stage or None, force=force,
                          compute_capabilities=tuple(compute_capability or ()), precision=precision, quantized=quantized)

@app.command("validate", help=VALIDATE_HELP)
def validate(
    engines: Path = typer.Option(..., "--engines", help="Engine folder written by build-engines."),
    stage: Optional[list[str]] = typer.Option(None, "--stage", metavar="STAGE", help=f"Only these stages (repeatable; default: all): {', '.join(ENGINE_STAGES)}."),
    points: str = typer.Option("opt", "--points", metavar="min,opt,max", help="Profile shape points to test, comma-separated: any of min, opt, max."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="Folder of real inputs saved as <stage>.pt (dict of tensors)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random inputs."),
    check_only: bool = typer.Option(False, "--check-only", help="Only check manifests and plans (no GPU needed)."),
    tolerance_scale: float = typer.Option(2.0, "--tolerance-scale", help="Multiple of the export specs' fp16 tolerances allowed (TensorRT vs onnxruntime)."),
) -> None:
    from mimic.engine.validate import check_engines, validate_engines

    if check_only:
        check_engines(engines, stages=stage or None)
        return
    validate_engines(engines, stages=stage or None, points=[p.strip() for p in points.split(",") if p.strip()],
                     inputs_dir=inputs, seed=seed, tolerance_scale=tolerance_scale)

@app.command("refit-unet", help="Swap the weights of the refittable UNet engines (unet and, when built, unet_features and unet_shallow; "
                                  "e.g. MimicMotion 1.0 <-> 1.1) without a rebuild (GPU).")
def refit_unet(
    engines: Path = typer.Option(..., "--engines", help="Engine folder with a refittable unet (build-engines --refittable)."),
    weights: opt.Weights = None,
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="The new MimicMotion checkpoint (.pth; overrides --weights/--preset)."),
    svd: opt.Svd = None,
    preset: opt.Preset = None,
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the comparison with a fresh build (not recommended)."),
) -> None:
    from mimic.engine.build import refit_unet_engine

    refit_unet_engine(engines, preset=preset, weights=weights, checkpoint=checkpoint, svd=svd, verify=not no_verify)
