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

Watching a job and controlling it are separate arguments:

* ``hooks=``: observers. Any object with any subset of ``on_stage_end(name, seconds)``,
  ``on_progress(done, total)`` and ``on_step_end(step, num_steps, latents)`` (subclass ``Hooks``
  for no-op defaults), or a list of them: each callback reaches every observer that has it, in
  list order (``Observers``). Checkpoints save in such an observer, placed first.
* ``control=``: a ``JobControl``: the gates around denoising (the executor's turn), the polls
  that may stop the job (cancelling), ``synchronize`` (device-synced phase timings) and
  ``deterministic`` (resumable latents). Pieces compose with ``JobControl.join``: gates nest,
  polls all run, the flags are OR-ed.

    class Steps:                                          # an observer: any subset of the callbacks
        def on_step_end(self, step, num_steps, latents): print(f"step {step}/{num_steps}")

    mm.render(job, hooks=Steps())                         # one observer, or a list of them
    generate(c, job, hooks=[saver, Steps()], control=JobControl(synchronize=True, polls=(check_cancel,)))
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Protocol, Sequence

import numpy as np
import torch

from mimic.model import preprocess as pre
from mimic.model.config import GenerationConfig
from mimic.model.model_info import ModelInfo
from mimic.model.windows import check_shapes, tile_noise
from mimic.runtime.backend_api import Backend
from mimic.runtime.decode import decode_frames
from mimic.runtime.denoise import Conditioning, check_cache_support, denoise, plan_denoise
from mimic.runtime.determinism import job_noise, promise_bit_identity
from mimic.runtime.admission import AdmittedJob
from mimic.runtime.inputs import JobInputs, RawInputs, prepare_poses, read_inputs
from mimic.runtime.jobs import Job
from mimic.runtime.report import JobReport, UnetWork, unet_flop_config, write_report
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
    unet_config: Any = None  # the SVD folder's unet/config.json (the run report's FLOP model); None: identified from the model

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
    """An observer of one job: subclass and override any subset (all no-ops here), or pass any
    object that has some of these methods. Observers only watch: how the job runs is ``JobControl``.

    ``on_inputs``: once steps 1-2 are done, with the job's ``JobInputs`` (its poses; ``mimic run
    --preview`` writes the pose preview from them before any denoising).
    ``on_decode``: after every decoded and written chunk, (frames done, total frames) of the output.
    ``on_stage_end``: after each timed phase (inputs, encode, denoise, decode_write) with seconds.
    ``on_progress``: after every UNet call, (done, total) over windows x steps.
    ``on_step_end``: after every denoising step with the fused latents (checkpoints, previews); the
    tensor is reused as working memory afterwards: copy or save it during the call.
    """

    def on_inputs(self, inputs) -> None:
        pass

    def on_stage_end(self, name: str, seconds: float) -> None:
        pass

    def on_decode(self, done: int, total: int) -> None:
        pass

    def on_progress(self, done: int, total: int) -> None:
        pass

    def on_step_end(self, step: int, num_steps: int, latents: torch.Tensor) -> None:
        pass


OBSERVER_CALLBACKS = ("on_inputs", "on_stage_end", "on_decode", "on_progress", "on_step_end")
CONTROL_NAMES = ("denoise_turn", "poll", "synchronize", "deterministic")  # JobControl's, never an observer's


def _fan_out(name: str):
    """The ``Observers`` method that calls ``name`` of every observer that has it, in order."""

    def call(self, *args) -> None:
        for callback in self._callbacks[name]:
            callback(*args)

    call.__name__ = name
    return call


class Observers:
    """Observers composed: each callback goes to every observer that defines it, in list order.

    ``Observers.of(x)`` accepts None, one observer, a list (nested lists and ``Observers`` are
    flattened; None entries dropped) or an ``Observers``. An observer carrying job control
    (``poll``, ``denoise_turn``, ``synchronize``, ``deterministic``) is refused: that goes to
    ``JobControl``, so it is never silently ignored."""

    def __init__(self, observers: Sequence = ()):
        flat: list = []
        for item in observers:
            if item is None:
                continue
            if isinstance(item, Observers):
                flat += item.observers
            elif isinstance(item, (list, tuple)):
                flat += Observers(item).observers
            else:
                control = [n for n in CONTROL_NAMES if hasattr(item, n)]
                if control:
                    raise TypeError(f"{type(item).__name__} has job control ({', '.join(control)}): pass it as control=JobControl(...), not as an observer")
                flat.append(item)
        self.observers = tuple(flat)
        self._callbacks = {n: tuple(getattr(o, n) for o in flat if callable(getattr(o, n, None))) for n in OBSERVER_CALLBACKS}

    @classmethod
    def of(cls, hooks) -> "Observers":
        if isinstance(hooks, Observers):
            return hooks
        return cls(hooks if isinstance(hooks, (list, tuple)) else [hooks])

    on_inputs = _fan_out("on_inputs")
    on_stage_end = _fan_out("on_stage_end")
    on_decode = _fan_out("on_decode")
    on_progress = _fan_out("on_progress")
    on_step_end = _fan_out("on_step_end")


@dataclass(frozen=True)
class JobControl:
    """How a job runs, as opposed to who watches it; pieces compose with ``JobControl.join``:
    turn gates nest (the first piece's outermost), every poll runs (in order), ``synchronize`` and
    ``deterministic`` are OR-ed.

    ``turns``: context-manager factories entered around step 6 (the executor lets one job denoise
    at a time). ``polls``: called between units of work (each UNet call, each decoded chunk): raise
    to stop the job (cancelling); everything written so far is discarded cleanly.
    ``synchronize``: phase timings wait for the device (benchmarks). ``deterministic``: the job's
    latents may be resumed by another process (checkpoints): no cuDNN autotuning."""

    turns: tuple[Callable[[], ContextManager], ...] = ()
    polls: tuple[Callable[[], None], ...] = ()
    synchronize: bool = False
    deterministic: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "turns", tuple(self.turns))
        object.__setattr__(self, "polls", tuple(self.polls))

    @classmethod
    def join(cls, *pieces: "JobControl | None") -> "JobControl":
        pieces = tuple(p for p in pieces if p is not None)
        return cls(
            turns=tuple(t for p in pieces for t in p.turns),
            polls=tuple(f for p in pieces for f in p.polls),
            synchronize=any(p.synchronize for p in pieces),
            deterministic=any(p.deterministic for p in pieces),
        )

    @contextlib.contextmanager
    def denoise_turn(self):
        with contextlib.ExitStack() as stack:
            for turn in self.turns:
                stack.enter_context(turn())
            yield

    def poll(self) -> None:
        for poll in self.polls:
            poll()


@dataclass(frozen=True)
class _StepCallbacks:
    """What the denoising loops call (``denoise.StepHooks``): the observers' and the control's."""

    on_progress: Callable[[int, int], None]
    on_step_end: Callable[[int, int, torch.Tensor], None]
    poll: Callable[[], None]


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
    job: Job | AdmittedJob,
    *,
    inputs: JobInputs | RawInputs | None = None,
    sink: FrameSink | None = None,
    hooks=None,
    control: JobControl | None = None,
    stream=None,
    noise: torch.Tensor | None = None,
    resume: tuple[int, torch.Tensor] | None = None,
    warnings: Sequence[str] = (),
) -> JobReport:
    """Render ``job`` and return its report.

    ``job``: an ``AdmittedJob`` (``mimic.runtime.admission.admit``: checked, its settings resolved
    and its inputs opened once: step 1 reuses them) or a plain ``Job`` (read here, unchecked).
    ``inputs``: already-prepared ``JobInputs`` (steps 1-2 skipped; the demo and benchmarks use this)
    or step 1's ``RawInputs`` (only the drawn pose frames still to read).
    ``sink``: receive the frames instead of writing ``job.out`` (no file, no report is written).
    ``hooks``: observers (``Hooks``; one, a list, or ``Observers``); ``control``: ``JobControl``.
    ``stream``: the CUDA stream every stage is enqueued on (None: the current stream).
    ``noise``: the initial latent noise (1, F, 4, h, w) instead of the seeded draw (parity tests).
    ``resume``: (k, latents) saved by an ``on_step_end`` observer after step k of the same job: steps 1-5
    run as usual (they are deterministic for the seed), then denoising continues from step k + 1;
    the result is identical to an uninterrupted run.
    ``warnings``: more warnings printed for the job, for its report; read when the report is made
    (a live list: the checkpoint store's, to which a failed save adds while the job runs).
    """
    observers, control = Observers.of(hooks), control or JobControl()
    steps = _StepCallbacks(observers.on_progress, observers.on_step_end, control.poll)
    admitted = job if isinstance(job, AdmittedJob) else None
    job = admitted.job if admitted else job
    report = JobReport(job)
    report.resumed_from_step = resume[0] if resume is not None else None
    config = admitted.config if admitted else job.config(c.base_config)
    report.speed = config.speed
    for b in c.backends:  # before any work: deep-feature caching needs graphs of that depth
        check_cache_support(b, config)
    backend, dt, dev = c.backend, c.dtype, c.device
    timer = _PhaseTimer(report, observers.on_stage_end, control.synchronize, dev)
    if dev.type == "cuda" and (c.workers or resume is not None or control.deterministic):
        promise_bit_identity()  # several GPUs, or another process's latents: no cuDNN autotuning

    with timer("inputs"):
        report.warnings += admitted.warnings if admitted else job.warnings
        if admitted and inputs is None:
            inputs = admitted.inputs
        if not isinstance(inputs, JobInputs):
            # 1. inputs (what admission opened is reused; drawn pose frames are read now, once)
            raw = read_inputs(job, config, inputs)
            # 2. poses
            inputs = prepare_poses(raw, config, c.detector, pad=c.pad_short)
            del raw
        report.warnings += inputs.warnings
        if inputs.sequence is not None:  # logged when the extraction started: not repeated at the job's end
            report.printed += list(inputs.sequence.extraction_warnings)
        num_frames, height, width = check_shapes(inputs.reference, len(inputs.poses), (inputs.poses.height, inputs.poses.width), config.window)
        report.fps, report.size = inputs.output_fps, (width, height)
        if c.audio and sink is None and inputs.audio_source is not None and not job.writes_png_sequence:
            drift = audio_drift_warning(inputs)
            if drift:  # said before rendering, not after minutes of it
                log.warning(drift)
                report.warnings.append(drift)
                report.printed.append(drift)
    observers.on_inputs(inputs)

    with timer("encode"):
        reference = pre.upstream_pixel_roundtrip(inputs.reference, dt)
        # 3. image embedding
        clip = pre.clip_pixels(reference, c.info.clip_mean, c.info.clip_std).to(dev, dt)
        embeds = backend.run(StageName.IMAGE_ENCODER, {N.PIXEL_VALUES: clip}, stream)[N.IMAGE_EMBEDS].to(dt).unsqueeze(1)
        if config.image_embed_strength != 1.0:  # the conditional embedding scaled (the unconditional one is zeros)
            embeds = embeds * config.image_embed_strength
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
    calls: Counter = Counter()  # UNet calls by batch size, for the report's TFLOP per output frame
    with control.denoise_turn(), timer("denoise"):
        if c.workers:
            from mimic.runtime.parallel import denoise_parallel

            latents = denoise_parallel(c.backends, plan, cond, inputs.poses, latents, steps, stream, calls=calls)
        else:
            latents = denoise(backend, plan, cond, inputs.poses, latents, steps, stream, calls=calls)
    del cond
    report.unet = UnetWork(unet_flop_config(c.unet_config, backend, c.info), plan.window, height, width, dict(calls),
                           dict(plan.unet_calls(range(plan.start_step))))

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
                    observers.on_decode(writer.frames_written, inputs.num_output)
                control.poll()
        report.frames = writer.frames_written
        if sink is None:
            report.output = Path(job.out)
            if c.audio and inputs.audio_source is not None and not job.writes_png_sequence:
                _copy_audio(job, inputs, report)
    report.warnings += warnings
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
    if not mux_audio(job.out, inputs.audio_source, inputs.audio_start_s, duration):
        report.warnings.append(f"{inputs.audio_source} has no audio stream to copy")


def audio_drift_warning(inputs: JobInputs) -> str | None:
    """The warning for an ``--fps`` that does not play the sampled motion in real time, when the
    source's audio is copied (it follows the source's clock); None when they agree."""
    if inputs.pose_fps and abs(inputs.pose_fps - inputs.output_fps) > 1e-3:
        return (f"output plays at {inputs.output_fps:g} fps but the sampled motion is {inputs.pose_fps:g} fps: "
                f"audio follows the source clock and will drift (use --fps {inputs.pose_fps:g}, the default)")
    return None


class _PhaseTimer:
    """``with timer(name):`` records the phase's seconds in the report and tells the observers."""

    def __init__(self, report: JobReport, on_stage_end: Callable[[str, float], None], synchronize: bool, device: torch.device):
        self.report, self.on_stage_end = report, on_stage_end
        self.sync = synchronize and device.type == "cuda"
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
        self.on_stage_end(name, seconds)
