"""Analytic FLOP model of every stage (counted by torch on the meta device) and the whole-job estimate.

The per-stage model lives in :mod:`mimic.model.flops` (a run needs it for the UNet TFLOP per output
frame of its report); it is re-exported here unchanged, so ``mimic.benchmarks.flops`` keeps its API.
This module adds :func:`job_flops`, the work of a whole job before it runs (benchmark floors,
scaling curves), with the same UNet passes the runtime runs: a CFG pair (batch 2) at the steps whose
noise level is inside the guidance interval, the conditional half alone (batch 1) at the others.

At 576x1024 the real SVD-XT 1.1 configuration gives (acceleration spec section 8): UNet 3.20 TFLOP
per frame per pass, VAE decoder 6.94 TFLOP per frame, VAE encoder 2.61, CLIP 0.335.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mimic.model.flops import (  # noqa: F401  (the public API of this module, moved one layer down)
    PINNED_UNET_FLOPS,
    REAL_CLIP_CONFIG,
    REAL_UNET_CONFIG,
    REAL_VAE_CONFIG,
    TFLOP,
    ModelConfigs,
    clip_flops,
    count_unet_flops,
    frozen_config,
    pose_net_flops,
    reference_frame_pass_flops,
    stage_flops,
    unet_call_flops,
    unet_flops,
    unet_flops_per_frame,
    unet_work_flops,
    unet_work_flops_576x1024,
    vae_decoder_flops,
    vae_encoder_flops,
)
from mimic.spec import StageName as S

__all__ = [
    "PINNED_UNET_FLOPS", "REAL_CLIP_CONFIG", "REAL_UNET_CONFIG", "REAL_VAE_CONFIG", "TFLOP", "JobFlops", "ModelConfigs", "clip_flops",
    "count_unet_flops", "frozen_config", "job_flops", "job_frames", "pose_net_flops", "reference_frame_pass_flops",
    "released_unet_tflop_per_output_frame", "stage_flops", "unet_call_flops", "unet_flops", "unet_flops_per_frame", "unet_work_flops",
    "unet_work_flops_576x1024", "vae_decoder_flops", "vae_encoder_flops",
]


# ---------------------------------------------------------------------------------- whole job
@dataclass(frozen=True)
class JobFlops:
    """The work of one job: stage totals (FLOPs) and the counts they come from."""

    output_frames: int  # N driving/output frames
    frames: int  # F = reference slot + N, padded to at least one window
    height: int
    width: int
    window: int
    overlap: int
    steps: int
    windows: int
    unet_passes: int  # batch-1 UNet passes (2 per window per step with CFG, 1 outside the guidance interval)
    pose_net_calls: int
    stages: dict[str, int] = field(default_factory=dict)
    unet_calls: dict[int, int] = field(default_factory=dict)  # batch size -> UNet calls (window x step)

    @property
    def total(self) -> int:
        return int(sum(self.stages.values()))

    @property
    def unet_tflop_per_output_frame(self) -> float:
        """UNet TFLOP per output frame at the job's size (the run report's figure, before the run)."""
        return self.stages[S.UNET] / max(1, self.output_frames) / TFLOP

    @property
    def unet_tflop_per_output_frame_576x1024(self) -> float:
        """The same passes costed as frames of the released model at 576x1024 (``unet_work_flops_576x1024``)."""
        calls = {(self.window, batch): n for batch, n in self.unet_calls.items()}
        return unet_work_flops_576x1024(calls) / max(1, self.output_frames) / TFLOP

    def floor_seconds(self, tflops: float) -> float:
        """The time the job needs at a dense matrix rate of ``tflops`` TFLOP/s (no overheads)."""
        return self.total / (tflops * TFLOP)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total"] = self.total
        return d


def job_frames(num_output_frames: int, window: int) -> int:
    """F: the reference slot plus the output frames, padded to one window (as the runtime pads)."""
    return max(int(num_output_frames) + 1, int(window))


def job_flops(
    config,
    num_output_frames: int,
    height: int = 576,
    width: int = 1024,
    configs: ModelConfigs | None = None,
    pose_net_every_step: bool = False,
    scheduler=None,
) -> JobFlops:
    """The whole job for a :class:`GenerationConfig` (window, overlap, steps, schedule and guidance interval used).

    Work counted: steps x windows UNet calls, each a CFG pair (two batch-1 passes, or one batch-2
    call: the same FLOPs) inside the guidance interval and the conditional half alone outside it +
    PoseNet per window (the runtime caches it across steps; ``pose_net_every_step=True`` is the
    released loop) + temporal decode of every frame (reference slot included) + the VAE encoder and
    CLIP on the reference. ``configs`` defaults to the real SVD-XT 1.1 configuration, ``scheduler``
    (the sigma range the guidance interval is read against) to SVD's.
    """
    from mimic.model.scheduler import SchedulerConfig
    from mimic.model.windows import window_indices
    from mimic.runtime.denoise import guided_steps

    configs = configs or ModelConfigs.real()
    frames = job_frames(num_output_frames, config.window)
    windows = len(window_indices(frames, config.window, config.overlap))
    guided = guided_steps(config, scheduler or SchedulerConfig())
    unet_calls = {2: windows * sum(guided), 1: windows * (len(guided) - sum(guided))}
    passes = 2 * unet_calls[2] + unet_calls[1]
    pose_calls = windows * (config.steps if pose_net_every_step else 1)
    per_pass = unet_flops(configs, config.window, height, width, 1)
    chunk = max(1, min(int(config.decode_chunk), frames))
    full, rest = divmod(frames, chunk)
    decode = full * vae_decoder_flops(configs, chunk, height, width) + (vae_decoder_flops(configs, rest, height, width) if rest else 0)
    stages = {
        S.IMAGE_ENCODER: clip_flops(configs, 1),
        S.VAE_ENCODER: vae_encoder_flops(configs, height, width, 1),
        S.POSE_NET: pose_calls * pose_net_flops(configs, config.window, height, width),
        S.UNET: passes * per_pass,
        S.VAE_DECODER: decode,
    }
    return JobFlops(
        output_frames=int(num_output_frames), frames=frames, height=int(height), width=int(width), window=int(config.window),
        overlap=int(config.overlap), steps=int(config.steps), windows=windows, unet_passes=passes, pose_net_calls=pose_calls, stages=stages,
        unet_calls=unet_calls,
    )


def released_unet_tflop_per_output_frame(num_output_frames: int | None = None) -> float:
    """The released defaults' UNet TFLOP per output frame at 576x1024 (25 Karras steps, CFG on every
    step, 72-frame windows overlapping by 6): for ``num_output_frames``, or (None) for a long video,
    where the windows advance 66 frames each and so run 72/66 frame-passes per output frame."""
    from mimic.model.config import GenerationConfig

    config = GenerationConfig()
    if num_output_frames is not None:
        return job_flops(config, num_output_frames).unet_tflop_per_output_frame
    per_frame = unet_flops(ModelConfigs.real(), config.window, 576, 1024, 1) / config.window
    return 2 * config.steps * per_frame * config.window / (config.window - config.overlap) / TFLOP
