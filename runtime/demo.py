"""``mimic demo``: the whole job on an embedded model with built-in inputs, through the one pipeline
(onnxruntime backend on the CPU).

By default the ``toy`` preset (a tiny MimicMotion trained on procedurally rendered puppets, see
``mimic.toy``) renders a held-out puppet following a held-out dance; since the puppet's true frames
are known, the demo reports how close it came (silhouette IoU, PSNR and SSIM per frame, medians),
next to a baseline scored the same way: the reference image held still (every frame = the
reference). PSNR and SSIM are mostly the backdrop, so a still image already scores well on them;
the silhouette IoU is the number that shows the motion. It writes a labelled preview: pose | output
| ground truth, for the first, middle and last frame, numbered from 1 as everywhere the user reads
frame numbers (frame 1 is at 0.00 s). ``--preset tiny`` runs the random tiny weights on the same
inputs (noise-like output).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from mimic.media.images import write_png
from mimic.media.preview import labelled_panels
from mimic.media.video_writer import check_writable
from mimic.model.presets import default_generation
from mimic.model.preprocess import target_size
from mimic.pose.draw import draw_pose
from mimic.pose.images import DrawnPoses
from mimic.runtime.demo_assets import puppet_sample
from mimic.runtime.inputs import JobInputs, pad_to_window
from mimic.runtime.jobs import Job
from mimic.runtime.pipeline import generate
from mimic.runtime.progress import ProgressHooks
from mimic.runtime.api import MimicMotion, RuntimeOptions

log = logging.getLogger(__name__)

BUILT_IN = Path("<built-in>")


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, exc_type, exc, tb):
                if exc_type is None:
                    timer.seconds[name] = time.perf_counter() - self.t0
                    log.info(f"  {name:<10} {timer.seconds[name]:7.2f} s")

        return _Stage()


BASELINE = "reference image held still"


def _summary(scores) -> dict:
    return {"median_iou": scores.median_iou, "median_psnr_db": scores.median_psnr, "median_ssim": scores.median_ssim,
            "iou": [round(float(v), 4) for v in scores.iou], "psnr_db": [round(float(v), 3) for v in scores.psnr]}


def write_demo_inputs(out: Path, frames: int, preset: str = "toy") -> dict[str, Path]:
    """``mimic demo --inputs-only``: the held-out puppet as the files a user brings (reference image,
    dance video, its true poses as a pose file: ``mimic.toy.samples.write_sample_inputs``), at the
    preset's resolution, without rendering: the toy model driven by real motion (README, "Your own video")."""
    from mimic.toy.samples import write_sample_inputs

    out = Path(out)
    check_writable(out / "puppet-dance.mp4", what="--out")
    height, width = target_size(2, 1, default_generation(preset).resolution)  # portrait
    paths = write_sample_inputs(puppet_sample((height, width), frames), out)
    log.info(f"wrote {paths['reference']} (the reference) and {paths['ref_pose'].name} (its pose: --ref-pose), "
             f"{paths['video'].name} ({frames} frames, {width}x{height}) and {paths['poses'].name} (its poses: --pose)")
    return paths


def run_demo(out: Path, frames: int, steps: int | None, seed: int, backend: str, preset: str = "toy") -> dict:
    from mimic.toy.score import score_render

    out = Path(out)
    video = out / "demo.mp4"
    check_writable(video, what="--out")
    timer = _Timer()
    job = Job(reference=BUILT_IN, pose_frames=BUILT_IN, out=video, overrides={"seed": seed, **({"steps": steps} if steps else {})})
    config = job.config(default_generation(preset))  # what MimicMotion.from_preset(preset) renders with
    height, width = target_size(2, 1, config.resolution)  # portrait
    log.info(f"mimic demo: {preset} preset, {backend} backend, {frames} frames at {width}x{height}, {config.steps} steps, seed {seed}")
    with timer("load"):
        mm = MimicMotion.from_preset(preset, RuntimeOptions(backend=backend))
    with mm:
        with timer("poses"):
            sample = puppet_sample((height, width), frames)
            drawn = DrawnPoses(draw_pose(sample.ref_pose, height, width), sample.driving, height, width)
            poses, warnings = pad_to_window(drawn, config.window, pad=True)
        fps = config.fps_for(sample.fps)  # default: the dance's own rate
        inputs = JobInputs(sample.reference, poses, frames, fps, pose_fps=sample.fps, warnings=warnings)
        with timer("generate"):
            report = generate(mm.components, job, inputs=inputs, hooks=ProgressHooks("  denoising"))
    with timer("preview"):
        import av

        with av.open(str(video)) as container:
            decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        picks = sorted({0, len(decoded) // 2, len(decoded) - 1})  # indices into the video; shown as frames 1..N
        labels = ["pose", f"{preset} output", "ground truth"]
        rows = [labelled_panels([poses.get([1 + i])[0], decoded[i].transpose(2, 0, 1), sample.frames[i].transpose(2, 0, 1)], labels, i, fps)
                for i in picks]
        write_png(out / "preview.png", np.concatenate(rows, axis=0))
        scores = score_render(decoded, sample)
        still = score_render(np.repeat(sample.reference[None], len(decoded), axis=0), sample)  # the baseline
        (out / "scores.json").write_text(json.dumps({
            "preset": preset, "frames": len(decoded), "steps": config.steps, **_summary(scores),
            "baseline": {"what": BASELINE, **_summary(still)},
        }, indent=2) + "\n")
    for stage, seconds in report.seconds.items():
        log.info(f"    {stage:<12} {seconds:7.2f} s")
    log.info(f"against the ground truth: {scores.line()}")
    log.info(f"baseline ({BASELINE}): {still.line()}; only the IoU shows the motion")
    log.info(f"wrote {video} ({report.frames} frames, {width}x{height}, {fps:g} fps)")
    log.info(f"wrote {out / 'preview.png'} (pose | output | ground truth; frames {', '.join(str(i + 1) for i in picks)})")
    return {"video": video, "preview": out / "preview.png", "frames": report.frames, "seconds": report.seconds, "scores": scores,
            "baseline": still}
