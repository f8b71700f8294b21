"""The one pipeline: ``generate()`` renders one job, top to bottom.

Every way of running the engine goes through it: ``MimicMotion.render`` (the Python API and
``mimic run``), the overlapped ``JobExecutor`` (which runs several ``generate()`` calls at once and
only gates step 6 so one job denoises at a time), ``mimic demo`` and every benchmark.

    1. inputs      reference image cropped to the output size; driving source opened
    2. poses       DWPose (or a pose file / drawn frames), retargeted, drawn lazily per window
    3. image embedding     CLIP image embedding of the reference (CFG pair: zeros, embedding)
    4. reference latents   VAE posterior mean of the (noise-augmented) reference
    5. conditioning        added time ids, the noise schedule (Karras or AYS), the initial noise
    6. denoising   windowed CFG denoising with progressive latent fusion (``denoise.py``)
    7. decode + write      temporal-decoder chunks streamed to the writer in order; report

Numerically this is the reference pipeline (``mimicmotion_ref.pipeline``): same preprocessing, same
random draws for a seed (pixel noise in step 4, then one window of latent noise in step 5; on the
main GPU when there is one, as the released script draws them: ``determinism``), same
fusion, guidance and Euler step; restructured for speed and bounded host memory.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from mimic.model import preprocess as pre
from mimic.model.config import GenerationConfig
from mimic.model.model_info import ModelInfo
from mimic.model.windows import check_shapes, tile_noise
from mimic.runtime.backend_api import Backend
from mimic.runtime.decode import decode_frames
from mimic.runtime.denoise import Conditioning, denoise, plan_denoise
from mimic.runtime.determinism import job_noise, promise_bit_identity
from mimic.runtime.inputs import JobInputs, prepare_poses, read_inputs
from mimic.runtime.jobs import Job
from mimic.runtime.report import JobReport, write_report
from mimic.spec import StageName
from mimic.spec import TensorName as N

log = logging.getLogger(__name__)

CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}  # the output's suffix decides its container


@dataclass(frozen=True)
class Components:
    """What ``generate()`` needs that is loaded once and shared by every job."""

    backend: Backend
    info: ModelInfo
    dtype: torch.dtype
    base_config: GenerationConfig
    detector: Callable[[], Any]  # the DWPose detector, created on first use
    pad_short: bool = True  # pad clips shorter than a window (else an InputError)
    audio: bool = False  # copy the driving video's audio into mp4 outputs
    facts: dict = field(default_factory=dict)  # backend / device / precision, for the run report
    workers: tuple[Backend, ...] = ()  # more backends (other devices): windows and decode chunks split over all

    @property
    def backends(self) -> tuple[Backend, ...]:
        return (self.backend, *self.workers)

    @property
    def device(self) -> torch.device:
        return self.backend.device


class FrameSink(Protocol):
    """Where step 7 puts frames: a video or PNG writer (``mimic.media``), or a benchmark's counter."""

    frames_written: int

    def write(self, frames: np.ndarray) -> None: ...


class Hooks:
    """Callbacks ``generate()`` calls; override what you need (all no-ops here).

    ``on_stage_end``: after each timed phase (inputs, encode, denoise, decode_write) with seconds.
    ``on_progress``: after every UNet call, (done, total) over windows x steps.
    ``on_step_end``: after every denoising step with the fused latents (checkpoints, previews); the
    tensor is reused as working memory afterwards: copy or save it during the call.
    ``denoise_turn``: a context manager around step 6 (the executor lets one job denoise at a time).
    """

    def on_stage_end(self, name: str, seconds: float) -> None:
        pass

    def on_progress(self, done: int, total: int) -> None:
        pass

    def on_step_end(self, step: int, num_steps: int, latents: torch.Tensor) -> None:
        pass

    def denoise_turn(self):
        return contextlib.nullcontext()

    def poll(self) -> None:
        """Called between units of work (each UNet call, each decoded chunk): raise here to stop the
        job (the executor cancels jobs this way); everything written so far is discarded cleanly."""

    synchronize = False  # True: phase timings wait for the device (benchmarks)
    deterministic = False  # True: the job's latents may be resumed by another process (checkpoints)


class FrameCollector:
    """A sink that keeps the frames (tests, benchmarks): ``frames()`` -> uint8 (n, 3, H, W)."""

    def __init__(self, keep: bool = True):
        self.keep, self.chunks, self.frames_written = keep, [], 0

    def write(self, frames: np.ndarray) -> None:
        self.frames_written += len(frames)
        if self.keep:
            self.chunks.append(frames)

    def frames(self) -> np.ndarray | None:
        return np.concatenate(self.chunks) if self.chunks else None


def in_memory_job(config: GenerationConfig) -> Job:
    """A job whose inputs are given to ``generate(inputs=...)`` and whose frames go to a sink."""
    memory = Path("<in-memory>")
    return Job(reference=memory, pose_frames=memory, out=memory, overrides=config.to_dict())


@torch.inference_mode()
def generate(
    c: Components,
    job: Job,
    *,
    inputs: JobInputs | None = None,
    sink: FrameSink | None = None,
    hooks: Hooks | None = None,
    stream=None,
    noise: torch.Tensor | None = None,
    resume: tuple[int, torch.Tensor] | None = None,
) -> JobReport:
    """Render ``job`` and return its report.

    ``inputs``: already-read inputs (steps 1-2 skipped; the demo and benchmarks use this).
    ``sink``: receive the frames instead of writing ``job.out`` (no file, no report is written).
    ``stream``: the CUDA stream every stage is enqueued on (None: the current stream).
    ``noise``: the initial latent noise (1, F, 4, h, w) instead of the seeded draw (parity tests).
    ``resume``: (k, latents) saved by ``Hooks.on_step_end`` after step k of the same job: steps 1-5
    run as usual (they are deterministic for the seed), then denoising continues from step k + 1;
    the result is identical to an uninterrupted run.
    """
    hooks = hooks or Hooks()
    report = JobReport(job)
    report.resumed_from_step = resume[0] if resume is not None else None
    config = job.config(c.base_config)
    backend, dt, dev = c.backend, c.dtype, c.device
    timer = _PhaseTimer(report, hooks, dev)
    if dev.type == "cuda" and (c.workers or resume is not None or getattr(hooks, "deterministic", False)):
        promise_bit_identity()  # several GPUs, or another process's latents: no cuDNN autotuning

    with timer("inputs"):
        # 1. inputs
        if inputs is None:
            raw = read_inputs(job, config)
            # 2. poses
            inputs = prepare_poses(raw, config, c.detector, pad=c.pad_short)
        report.warnings += inputs.warnings
        num_frames, height, width = check_shapes(inputs.reference, len(inputs.poses), (inputs.poses.height, inputs.poses.width), config.window)

    with timer("encode"):
        reference = pre.upstream_pixel_roundtrip(inputs.reference, dt)
        # 3. image embedding
        clip = pre.clip_pixels(reference, c.info.clip_mean, c.info.clip_std).to(dev, dt)
        embeds = backend.run(StageName.IMAGE_ENCODER, {N.PIXEL_VALUES: clip}, stream)[N.IMAGE_EMBEDS].to(dt).unsqueeze(1)
        # 4. reference latents (noise augmentation: the job's first random draw)
        pixels = pre.vae_pixels(reference)
        # both draws now, in the released order; on the main GPU when there is one (``determinism``)
        pixel_noise, window_noise = job_noise(config.seed, dev, pixels.shape, (1, config.window, c.info.latent_channels, height // 8, width // 8), dt)
        pixels = (pixels.to(pixel_noise.device) + config.noise_aug_strength * pixel_noise).to(dev, dt)
        ref_latents = backend.run(StageName.VAE_ENCODER, {N.IMAGE: pixels}, stream)[N.LATENT_MEAN].to(dt)
        # 5. conditioning: CFG pairs [uncond, cond], added time ids, schedule, initial noise (second draw)
        cond = Conditioning(
            image_embeds=torch.cat([torch.zeros_like(embeds), embeds]),
            ref_latents=torch.cat([torch.zeros_like(ref_latents), ref_latents]),
            added_time_ids=torch.tensor([[config.fps_cond - 1, config.motion_bucket_id, config.noise_aug_strength]], dtype=dt, device=dev).repeat(2, 1),
        )
        plan = plan_denoise(num_frames, config, c.info.scheduler, dt, dev, start_step=resume[0] if resume else 0)
        if noise is None:
            noise = tile_noise(window_noise, num_frames)
        latents = noise.to(dev, dt) * plan.schedule.init_noise_sigma
        if resume is not None:
            latents = resume[1].to(dev, dt)

    # 6. windowed denoising with progressive latent fusion
    with hooks.denoise_turn(), timer("denoise"):
        if c.workers:
            from mimic.runtime.parallel import denoise_parallel

            latents = denoise_parallel(c.backends, plan, cond, inputs.poses, latents, hooks, stream)
        else:
            latents = denoise(backend, plan, cond, inputs.poses, latents, hooks, stream)
    del cond

    with timer("decode_write"):
        # 7. streamed decode, frame 0 (the reference slot) and padding dropped, written in order
        with contextlib.ExitStack() as stack:
            writer = sink if sink is not None else stack.enter_context(_open_writer(job, inputs, (height, width)))
            if c.workers:
                from mimic.runtime.parallel import decode_parallel

                chunks = decode_parallel(c.backends, latents, c.info.scaling_factor, config.decode_chunk, stream)
            else:
                chunks = decode_frames(backend, latents, c.info.scaling_factor, config.decode_chunk, stream)
            for start, frames in chunks:
                keep = frames[max(0, 1 - start) : max(0, 1 + inputs.num_output - start)]
                if len(keep):
                    writer.write(keep)
                hooks.poll()
        report.frames = writer.frames_written
        if sink is None:
            report.output = Path(job.out)
            if c.audio and inputs.audio_source is not None and not job.writes_png_sequence:
                _copy_audio(job, inputs, report)
    if sink is None:
        write_report(job, report, config, c.facts)
    return report


def _open_writer(job: Job, inputs: JobInputs, hw: tuple[int, int]):
    from mimic.media.video_writer import PngSequenceWriter, VideoWriter

    if job.writes_png_sequence:
        return PngSequenceWriter(job.out)
    return VideoWriter(job.out, inputs.output_fps, hw, container_format=CONTAINERS.get(Path(job.out).suffix.lower(), "mp4"))


def _copy_audio(job: Job, inputs: JobInputs, report: JobReport) -> None:
    from mimic.media.audio import mux_audio

    duration = report.frames / inputs.output_fps
    if inputs.pose_fps and abs(inputs.pose_fps - inputs.output_fps) > 1e-3:
        report.warnings.append(
            f"output plays at {inputs.output_fps:g} fps but the sampled motion is {inputs.pose_fps:g} fps: "
            f"audio follows the source clock and will drift (use --fps {inputs.pose_fps:g})"
        )
    if not mux_audio(job.out, inputs.audio_source, inputs.audio_start_s, duration):
        report.warnings.append(f"{inputs.audio_source} has no audio stream to copy")


class _PhaseTimer:
    """``with timer(name):`` records the phase's seconds in the report and tells the hooks."""

    def __init__(self, report: JobReport, hooks: Hooks, device: torch.device):
        self.report, self.hooks = report, hooks
        self.sync = hooks.synchronize and device.type == "cuda"
        self.device = device

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.sync:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if self.sync:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        self.report.seconds[name] = seconds
        self.hooks.on_stage_end(name, seconds)
