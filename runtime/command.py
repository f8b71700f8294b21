"""``mimic run``: one job from options, or many from a jobs file / upstream config."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mimic.errors import InputError

RUN_HELP = """Render the reference image performing the driving motion.

Driving source: --driving VIDEO (DWPose runs on it), --pose POSES.npz (from `mimic pose`) or
--pose-frames VIDEO_OR_DIR (already-drawn pose images). --out OUT.mp4 writes H.264; --out DIR/
writes numbered PNGs. A run report (JSON) is written beside the output. Jobs files (--jobs, YAML or
JSON list; upstream's configs/test.yaml too) render many jobs with stages overlapped."""


def register(app: typer.Typer) -> None:
    @app.command(help=RUN_HELP)
    def run(
        ref: Optional[Path] = typer.Option(None, "--ref", help="Reference image."),
        driving: Optional[Path] = typer.Option(None, "--driving", help="Driving video."),
        pose: Optional[Path] = typer.Option(None, "--pose", help="Pose file from `mimic pose`."),
        pose_frames: Optional[Path] = typer.Option(None, "--pose-frames", help="Drawn pose images (video or folder)."),
        ref_pose: Optional[Path] = typer.Option(None, "--ref-pose", help="The reference's drawn pose image."),
        out: Optional[Path] = typer.Option(None, "--out", help="OUT.mp4, or a folder for numbered PNGs."),
        jobs: Optional[Path] = typer.Option(None, "--jobs", help="Jobs file (YAML/JSON list or upstream test.yaml)."),
        config: Optional[Path] = typer.Option(None, "--config", help="Settings file (YAML/JSON mapping of run settings)."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="Upstream weights folder (DWPose/, SVD/, MimicMotion_1-1.pth)."),
        preset: Optional[str] = typer.Option(None, "--preset", help="Built-in weights: tiny."),
        svd: Optional[str] = typer.Option(None, "--svd", help="SVD diffusers folder or hub id (overrides --weights)."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="MimicMotion .pth (overrides --weights)."),
        engines: Optional[Path] = typer.Option(None, "--engines", help="Engine folder from `mimic build-engines` (tensorrt)."),
        onnx_dir: Optional[Path] = typer.Option(None, "--onnx", help="Exported ONNX folder (onnxruntime)."),
        backend: str = typer.Option("onnxruntime", help="torch | onnxruntime | tensorrt."),
        device: str = typer.Option("cpu", help="cpu | cuda[:N]."),
        precision: Optional[str] = typer.Option(None, help="fp16 | fp32 (default fp16 on CUDA, fp32 on CPU)."),
        window: Optional[int] = typer.Option(None, help="Frames per denoising window (72 for 1.1, 16 for 1.0)."),
        overlap: Optional[int] = typer.Option(None, help="Window overlap (released: 6)."),
        steps: Optional[int] = typer.Option(None, help="Denoising steps (released: 25)."),
        guidance_min: Optional[float] = typer.Option(None, help="Guidance at the first frame."),
        guidance_max: Optional[float] = typer.Option(None, help="Guidance at the last frame."),
        guidance: Optional[float] = typer.Option(None, help="Constant guidance (sets min and max; released 2.0)."),
        seed: Optional[int] = typer.Option(None, help="Random seed (released: 42)."),
        fps: Optional[float] = typer.Option(None, help="Output frame rate (released: 15)."),
        resolution: Optional[int] = typer.Option(None, help="Short side in px, multiple of 64 (released: 576)."),
        sample_stride: Optional[int] = typer.Option(None, help="Driving-video frame stride (released: 2)."),
        noise_aug: Optional[float] = typer.Option(None, help="Noise augmentation strength (released: 0)."),
        decode_chunk: Optional[int] = typer.Option(None, help="Frames per temporal-decoder chunk (released: 8)."),
        no_pad: bool = typer.Option(False, "--no-pad", help="Fail instead of padding clips shorter than a window."),
        sequential: bool = typer.Option(False, "--sequential", help="Do not overlap stages across jobs."),
        audio: bool = typer.Option(False, "--audio", help="Copy the driving video's audio (aligned to the sampled frames)."),
    ) -> None:
        from mimic.runtime.run_options import run_command

        overrides = dict(
            window=window, overlap=overlap, steps=steps, guidance_min=guidance_min, guidance_max=guidance_max, seed=seed,
            output_fps=fps, resolution=resolution, sample_stride=sample_stride, noise_aug_strength=noise_aug, decode_chunk=decode_chunk,
        )
        if guidance is not None:
            if guidance_min is not None or guidance_max is not None:
                raise InputError("give --guidance or --guidance-min/--guidance-max, not both")
            overrides["guidance_min"] = overrides["guidance_max"] = guidance
        failed = run_command(
            ref=ref, driving=driving, pose=pose, pose_frames=pose_frames, ref_pose=ref_pose, out=out, jobs_file=jobs,
            config_file=config, weights=weights, preset=preset, svd=svd, checkpoint=checkpoint, engines=engines,
            onnx_dir=onnx_dir, backend=backend, device=device, precision=precision,
            overrides={k: v for k, v in overrides.items() if v is not None}, pad=not no_pad, overlap_jobs=not sequential, audio=audio, echo=typer.echo,
        )
        if failed:
            raise typer.Exit(code=1)
