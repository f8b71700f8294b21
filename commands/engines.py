"""``mimic build-engines``, ``mimic validate`` and ``mimic refit-unet``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mimic.spec import DEFAULT_WORKSPACE_GB

BUILD_HELP = """Export FP16 ONNX and build one TensorRT engine per stage into OUT.

Stages: image_encoder, vae_encoder, pose_net, unet, vae_decoder and the two DWPose models. Each
engine is published as OUT/<stage>.plan + OUT/<stage>.manifest.json; a second run reuses engines
whose cache key (ONNX bytes, build options, TensorRT version, GPU) is unchanged ("up to date").
--target tensorrt-rtx builds ahead of time without a GPU (consumer GPUs sm_80/86/89/120)."""

VALIDATE_HELP = """Run every engine in DIR against onnxruntime on the same ONNX (GPU needed).

Every manifest and plan is checked first (works without a GPU; --check-only stops there). Prints max abs / relative error, PSNR for decoded frames and NaN counts per output; exits non-zero
when a stage is outside its tolerance."""


app = typer.Typer()


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
    from mimic.engine.command import build_engines_command

    build_engines_command(out, preset=preset, weights=weights, shapes=shapes, window=window, target=target,
                          optimization_level=optimization_level, workspace_gb=workspace_gb, timing_cache=timing_cache,
                          use_timing_cache=not no_timing_cache, refittable=refittable, stages=stage or None, force=force,
                          compute_capabilities=tuple(compute_capability or ()))

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
        check_engines(engines, stages=stage or None)
        return
    validate_engines(engines, stages=stage or None, points=[p.strip() for p in points.split(",") if p.strip()],
                     inputs_dir=inputs, seed=seed, tolerance_scale=tolerance_scale)

@app.command("refit-unet", help="Swap the weights of a refittable UNet engine (e.g. MimicMotion 1.0 <-> 1.1) without a rebuild (GPU).")
def refit_unet(
    engines: Path = typer.Option(..., "--engines", help="Engine folder with a refittable unet (build-engines --refittable)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Weights folder with the new checkpoint."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="The new MimicMotion checkpoint (.pth)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Built-in weights: tiny."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the comparison with a fresh build (not recommended)."),
) -> None:
    from mimic.engine.command import refit_unet_command

    refit_unet_command(engines, preset=preset, weights=weights, checkpoint=checkpoint, verify=not no_verify)
