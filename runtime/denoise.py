"""Windowed denoising with progressive latent fusion, as the reference does it but with less work
and bounded memory:

* classifier-free guidance as one batch-2 UNet call (zero pose latents for the unconditional half);
* PoseNet run once per window and its output reused by every step (within a memory budget);
* guidance applied per window before fusion. Guidance ``u + g_f (c - u)`` is linear with a
  per-frame scale, so fusing guided window outputs equals guiding the fused outputs (the
  reference's order) up to float rounding, and only one latent-sized accumulator is needed;
* the Euler step in fp32, in place, on the device; a NaN/Inf check after every step (a job fails
  loudly instead of writing black frames);
* guidance in a limited interval (``--guidance-sigma-min/--guidance-sigma-max``, Kynkaanniemi et
  al., NeurIPS 2024): at a step whose noise level is outside the interval the window's UNet call is
  the conditional half alone (batch 1: the CFG pair's second row of every feed) and the guided
  output is the conditional prediction. By default every step is guided (the released loop);
* deep-feature caching (``--cache-interval/--cache-depth``, DeepCache): the plan marks each step a
  full pass or a cached step (``CachePlan``); a full pass that a cached step follows runs the
  ``unet_features`` stage and keeps the window's deep features (``FeatureCache``), a cached step runs
  ``unet_shallow`` around them. The pattern depends on the step only (a cached step never needs the
  unconditional half that its full pass did not run), so checkpoints are taken only where the next
  step is a full pass (``CachePlan.resumable``) and a resumed job repeats an uninterrupted one bit
  for bit. Off by default: the released loop, the same calls;
* the UNet calls are counted by batch size (``WindowStepper.calls``, handed out through ``calls=``;
  a cached step's shallow pass as ``(batch, depth)``), for the run report's UNet TFLOP per output
  frame (``mimic.runtime.report.UnetWork``).
Working set per step: the latents, one accumulator and one temporary (plus one window).

Per UNet call nothing is allocated for the feeds: the CFG pair's sample buffer (latents | reference
latents) and pose buffer (zeros | pose latents) are allocated once and written in place; sigma and
the step's scalars stay on the host (the schedule is a CPU tensor), the timesteps and every
window's frame indices are moved to the device once (indexing with a Python list would copy it and
wait, per use), so the only host synchronisation per step is the NaN/Inf check. PoseNet outputs are
cached on the device up to a budget sized from its free memory, then as pinned host copies (one
asynchronous upload per use), and only beyond both recomputed. ``stream``: the CUDA stream every
stage is enqueued on (None: the current one). On the CPU the arithmetic is exactly the previous
loop's (same ops, same order), so CPU outputs are unchanged bit for bit.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import torch

from mimic.errors import InputError, NumericsError
from mimic.model.config import GenerationConfig
from mimic.model.preprocess import pose_pixels
from mimic.model.scheduler import Schedule, SchedulerConfig, make_schedule
from mimic.model.windows import guidance_scales, tent_weights, window_indices
from mimic.pose.images import PoseImages
from mimic.runtime.backend_api import Backend
from mimic.spec import CACHE_STAGES, StageName
from mimic.spec import TensorName as N


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conditioning:
    """Per-job conditioning, CFG halves stacked [uncond, cond]."""

    image_embeds: torch.Tensor  # (2, 1, D)
    ref_latents: torch.Tensor  # (2, 4, h, w) (not repeated over frames)
    added_time_ids: torch.Tensor  # (2, 3)


POSE_CACHE_FREE_FRACTION = 0.25  # of the device memory free when the job is planned
HOST_POSE_CACHE_MAX = 16 << 30


def default_pose_cache_budget(device: torch.device) -> int:
    """Device memory for cached PoseNet outputs: a quarter of what is free on a GPU (the UNet's
    activations need the rest); small on the CPU, where the cache would be host memory that grows
    with the video (beyond it PoseNet is recomputed)."""
    if device.type != "cuda":
        return 64 << 20
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # pragma: no cover - no driver answer: the old fixed budget
        return 4 << 30
    return int(free * POSE_CACHE_FREE_FRACTION)


def default_host_pose_cache_budget(device: torch.device) -> int:
    """Pinned host memory for PoseNet outputs beyond the device budget (CUDA only): a quarter of
    the available host memory, at most 16 GiB. 0 on the CPU (the device budget is host memory)."""
    if device.type != "cuda":
        return 0
    try:
        import psutil

        return int(min(HOST_POSE_CACHE_MAX, psutil.virtual_memory().available // 4))
    except Exception:  # pragma: no cover
        return 0


class PoseLatentCache:
    """PoseNet output per window, computed on first use and kept on the device while under
    ``budget_bytes``, then (CUDA) as pinned host copies while under ``host_budget_bytes``; windows
    beyond both are recomputed when needed (bounded memory for any length)."""

    def __init__(self, backend: Backend, poses: PoseImages, windows: list[list[int]], dtype: torch.dtype, budget_bytes: int,
                 host_budget_bytes: int = 0, stream=None):
        self.backend, self.poses, self.windows, self.dtype, self.budget = backend, poses, windows, dtype, budget_bytes
        self.host_budget, self.stream = host_budget_bytes, stream
        self._cache: dict[int, torch.Tensor] = {}
        self._host: dict[int, torch.Tensor] = {}
        self._bytes = self._host_bytes = 0
        self.computed = 0

    def get(self, j: int) -> torch.Tensor:
        hit = self._cache.get(j)
        if hit is not None:
            return hit
        pinned = self._host.get(j)
        if pinned is not None:  # pinned -> device, asynchronous on the current stream
            return pinned.to(self.backend.device, non_blocking=True)
        images = pose_pixels(self.poses.get(self.windows[j]), self.dtype).to(self.backend.device)
        lat = self.backend.run(StageName.POSE_NET, {N.POSE_IMAGES: images}, self.stream)[N.POSE_LATENTS].to(self.dtype)
        self.computed += 1
        size = lat.numel() * lat.element_size()
        if self._bytes + size <= self.budget:
            self._cache[j] = lat
            self._bytes += size
        elif lat.is_cuda and self._host_bytes + size <= self.host_budget:
            pinned = torch.empty(lat.shape, dtype=lat.dtype, pin_memory=True)
            pinned.copy_(lat, non_blocking=True)  # ordered before any later upload on this stream
            self._host[j] = pinned
            self._host_bytes += size
        return lat


FEATURE_CACHE_FREE_FRACTION = 0.25  # of the device memory free when the job is planned
HOST_FEATURE_CACHE_MAX = 16 << 30


@dataclass(frozen=True)
class CachePlan:
    """Deep-feature caching of one job: per step, a full pass (``full[i]``) or a cached step (the
    shallow pass at ``depth`` around the deep features of the window's last full pass).

    Memory: each window keeps one feature tensor, (B*F, C1, h, w) at depth 1 (B: the batch of the full
    pass that made it). For the released model at 576x1024 with 72-frame windows that is 2 x 72 x 640
    x 128 x 72 fp16 values, 1.70 GB per window (a CFG pair), 13.6 GB for the 35 s demo's eight windows. It
    lives on the device up to ``budget_bytes`` (a quarter of the free memory by default), then (CUDA)
    as pinned host copies up to ``host_budget_bytes``; a window beyond both runs its cached steps as
    full passes (the same maths as uncached: more FLOPs, which the report counts), so memory is
    bounded for any length."""

    depth: int
    full: tuple[bool, ...]
    budget_bytes: int
    host_budget_bytes: int = 0

    def keeps(self, i: int) -> bool:
        """Whether a full pass at step ``i`` must keep its features (a cached step follows it)."""
        return i + 1 < len(self.full) and not self.full[i + 1]

    def resumable(self, steps_done: int) -> bool:
        """Whether a checkpoint after ``steps_done`` steps resumes bit for bit: the next step is a full pass."""
        return steps_done >= len(self.full) or self.full[steps_done]


def cache_pattern(interval: int, guided: tuple[bool, ...]) -> tuple[bool, ...]:
    """Per step, full pass (True) or cached step: a full pass every ``interval`` steps, and also
    wherever the step needs a CFG half that the last full pass did not run (a guided step after an
    unguided full pass)."""
    full: list[bool] = []
    since, batch = 0, 0
    for g in guided:
        need = 2 if g else 1
        if not full or since >= interval or need > batch:
            full.append(True)
            since, batch = 1, need
        else:
            full.append(False)
            since += 1
    return tuple(full)


def default_feature_cache_budget(device: torch.device) -> tuple[int, int]:
    """(device bytes, pinned host bytes) for kept deep features: on a GPU a quarter of its free
    memory, then a quarter of the available host memory (at most 16 GiB); on the CPU the device is
    host memory: a quarter of what is available (at most 16 GiB), no second tier."""
    try:
        import psutil

        host = int(min(HOST_FEATURE_CACHE_MAX, psutil.virtual_memory().available // 4))
    except Exception:  # pragma: no cover
        host = 1 << 30
    if device.type != "cuda":
        return host, 0
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # pragma: no cover - no driver answer
        return 4 << 30, host
    return int(free * FEATURE_CACHE_FREE_FRACTION), host


class FeatureCache:
    """Each window's deep features from its last full pass: on the device while under the device
    budget, then (CUDA) pinned host copies; a window that fits neither keeps none (``fits(j)`` False:
    its cached steps run in full). Windows are visited in the same order every step and each keeps
    one tensor of a fixed size per batch, so which windows fit is settled at the first full pass that
    keeps features (a later CFG pair after a conditional-half pass may still be refused, in the same
    order every run)."""

    def __init__(self, device: torch.device, budget_bytes: int, host_budget_bytes: int):
        self.device, self.budget, self.host_budget = device, budget_bytes, host_budget_bytes
        self._kept: dict[int, tuple[torch.Tensor, int, bool]] = {}  # j -> (features, batch, on the host)
        self._bytes = self._host_bytes = 0
        self._refused: set[int] = set()

    def fits(self, j: int) -> bool:
        return j not in self._refused

    def has(self, j: int) -> bool:
        return j in self._kept

    @property
    def refused(self) -> int:
        """Windows whose features fit no budget (their cached steps ran as full passes)."""
        return len(self._refused)

    def put(self, j: int, features: torch.Tensor, batch: int) -> None:
        kept = self._kept.get(j)
        if kept is not None and kept[1] == batch:
            kept[0].copy_(features, non_blocking=True)
            return
        if kept is not None:  # the other batch (a CFG pair after a conditional half): replace it
            self._release(j)
        size = features.numel() * features.element_size()
        if self._bytes + size <= self.budget:
            self._kept[j] = (features.clone(), batch, False)
            self._bytes += size
        elif features.is_cuda and self._host_bytes + size <= self.host_budget:
            pinned = torch.empty(features.shape, dtype=features.dtype, pin_memory=True)
            pinned.copy_(features, non_blocking=True)  # ordered before any later upload on this stream
            self._kept[j] = (pinned, batch, True)
            self._host_bytes += size
        else:
            self._refused.add(j)
            log.warning(f"deep-feature cache: window {j + 1}'s features ({size / 2**30:.2f} GiB) fit neither the device budget "
                        f"({self.budget / 2**30:.1f} GiB) nor the host budget ({self.host_budget / 2**30:.1f} GiB): its cached steps run in full")

    def get(self, j: int, batch: int) -> torch.Tensor:
        """Window ``j``'s features for a shallow pass of ``batch`` (1 after a CFG pair: the
        conditional half's rows, the second half of the batch-major rows)."""
        features, kept_batch, on_host = self._kept[j]
        if batch < kept_batch:
            features = features[features.shape[0] // kept_batch:]
        return features.to(self.device, non_blocking=True) if on_host else features

    def _release(self, j: int) -> None:
        features, _, on_host = self._kept.pop(j)
        size = features.numel() * features.element_size()
        if on_host:
            self._host_bytes -= size
        else:
            self._bytes -= size


def check_cache_support(backend: Backend, config: GenerationConfig) -> None:
    """One line naming the flag when the job's deep-feature caching cannot run on ``backend``: the
    torch backend runs depths 1 .. levels - 1 of its UNet; the graph backends one depth (their
    ``unet_features``/``unet_shallow`` graphs or engines), or none when those are missing."""
    if config.cache_interval <= 1:
        return
    depths = tuple(backend.cache_depths()) if hasattr(backend, "cache_depths") else ()
    if config.cache_depth in depths:
        return
    if not depths:
        raise InputError(f"--cache-interval {config.cache_interval}: the {backend.name} backend has no cached UNet graphs "
                         f"({', '.join(CACHE_STAGES)}); export them again (mimic export / mimic build-engines) or use --backend torch")
    span = f"{depths[0]}..{depths[-1]}" if len(depths) > 1 else str(depths[0])
    what = "this model's UNet" if backend.name == "torch" else f"the {backend.name} graphs"
    raise InputError(f"--cache-depth {config.cache_depth}: {what} run{'s' if backend.name == 'torch' else ''} depth {span} only"
                     + ("" if backend.name == "torch" else "; use --backend torch for another depth"))


def check_finite(x: torch.Tensor, what: str, dtype: torch.dtype | None = None) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        hint = "try --precision fp32 or another backend" if (dtype or x.dtype) == torch.float16 else "try another backend"
        raise NumericsError(f"{bad} NaN/Inf values in {what}: stopping instead of writing broken frames ({hint})")


@dataclass(frozen=True)
class DenoisePlan:
    """Everything the windowed loop needs besides the tensors: made once per job by ``plan_denoise``."""

    schedule: Schedule
    windows: tuple[tuple[int, ...], ...]  # frame indices of each window (frame 0 = the reference, in every window)
    window: int
    guidance_min: float
    guidance_max: float
    dtype: torch.dtype
    pose_cache_bytes: int
    start_step: int = 0  # > 0: resuming from the latents saved after that many steps
    pose_host_cache_bytes: int = 0  # pinned host copies of PoseNet outputs beyond the device budget (CUDA)
    pose_strength: float = 1.0  # the conditional half's pose latents are scaled by it (1: as released, untouched)
    pose_steps: tuple[int, int] | None = None  # (first, last) step index with pose latents, both included; None: every step
    guided: tuple[bool, ...] | None = None  # per step: CFG pair (True) or conditional half alone; None: CFG at every step
    cache: CachePlan | None = None  # deep-feature caching (None: every step a full pass, as released)

    def cfg_active(self, i: int) -> bool:
        """Whether step ``i`` (0-based) runs the CFG pair (batch 2) rather than the conditional half (batch 1)."""
        return self.guided is None or self.guided[i]

    def unet_calls(self, steps: range) -> Counter:
        """UNet calls of ``steps`` (one call per window per step) as the loop runs them when every
        window's features fit the cache: batch size -> full passes, (batch, depth) -> shallow passes."""
        calls: Counter = Counter()
        for i in steps:
            calls[self.call_key(i)] += len(self.windows)
        return calls

    def call_key(self, i: int, cached: bool = True) -> int | tuple[int, int]:
        """The ``calls`` key of a window's UNet call at step ``i``: its batch for a full pass,
        (batch, depth) for a cached step's shallow pass (``cached`` False: the window keeps no features)."""
        batch = 2 if self.cfg_active(i) else 1
        if cached and self.cache is not None and not self.cache.full[i]:
            return (batch, self.cache.depth)
        return batch

    def pose_active(self, i: int) -> bool:
        """Whether step ``i`` (0-based) feeds the pose latents (else zeros, as the unconditional half gets)."""
        return self.pose_steps is None or self.pose_steps[0] <= i <= self.pose_steps[1]

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def total_calls(self) -> int:
        """UNet calls (one batched CFG pair each) = steps x windows."""
        return self.schedule.num_steps * len(self.windows)


def in_guidance_interval(sigma: float, config: GenerationConfig) -> bool:
    """Whether a step at noise level ``sigma`` is guided: ``--guidance-sigma-min <= sigma <=
    --guidance-sigma-max``, an unset end being no bound (both unset: every step, as released)."""
    lo, hi = config.guidance_sigma_min, config.guidance_sigma_max
    return (lo is None or sigma >= lo) and (hi is None or sigma <= hi)


def guided_steps(config: GenerationConfig, scheduler: SchedulerConfig, schedule: Schedule | None = None) -> tuple[bool, ...]:
    """Per denoising step, whether it runs classifier-free guidance (its sigma in the guidance interval)."""
    schedule = schedule or make_schedule(config.steps, scheduler, config.schedule)
    return tuple(in_guidance_interval(float(schedule.sigmas[i]), config) for i in range(schedule.num_steps))


def resume_points(config: GenerationConfig, scheduler: SchedulerConfig) -> tuple[bool, ...]:
    """Per number of steps done (0 .. steps), whether a checkpoint there resumes bit for bit: always
    without caching; with it, where the next step is a full pass (a cached step needs the deep
    features of a full pass that a resumed process has not run)."""
    full = cache_pattern(config.cache_interval, guided_steps(config, scheduler))
    return tuple(k >= len(full) or full[k] for k in range(config.steps + 1))


def plan_denoise(num_frames: int, config: GenerationConfig, scheduler: SchedulerConfig, dtype: torch.dtype, device: torch.device,
                 pose_cache_bytes: int | None = None, start_step: int = 0, feature_cache_bytes: int | None = None) -> DenoisePlan:
    """``feature_cache_bytes``: the deep-feature cache's budget (None: ``default_feature_cache_budget``)."""
    if not 0 <= start_step <= config.steps:
        raise ValueError(f"start step {start_step} outside 0..{config.steps}")
    schedule = make_schedule(config.steps, scheduler, config.schedule)
    guided = guided_steps(config, scheduler, schedule)
    cache = None
    full = cache_pattern(config.cache_interval, guided)
    if not all(full):
        budget, host = default_feature_cache_budget(device) if feature_cache_bytes is None else (feature_cache_bytes, 0)
        cache = CachePlan(config.cache_depth, full, budget, host)
    return DenoisePlan(
        schedule=schedule,
        windows=tuple(tuple(w) for w in window_indices(num_frames, config.window, config.overlap)),
        window=config.window,
        guidance_min=config.guidance_min,
        guidance_max=config.guidance_max,
        dtype=dtype,
        pose_cache_bytes=default_pose_cache_budget(device) if pose_cache_bytes is None else pose_cache_bytes,
        start_step=start_step,
        pose_host_cache_bytes=default_host_pose_cache_budget(device) if pose_cache_bytes is None else 0,
        pose_strength=config.pose_strength,
        pose_steps=None if (config.pose_start_percent, config.pose_end_percent) == (0.0, 1.0) else config.pose_steps(),
        guided=None if all(guided) else guided,
        cache=cache,
    )


class StepHooks(Protocol):
    def on_progress(self, done: int, total: int) -> None: ...

    def on_step_end(self, step: int, num_steps: int, latents: torch.Tensor) -> None: ...

    def poll(self) -> None: ...


def device_index(lists, device: torch.device) -> list[torch.Tensor]:
    """Index lists -> LongTensors on ``device``, with one host -> device copy for all of them.

    Indexing a CUDA tensor with a Python list copies the list to the device and waits for the copy:
    a host synchronisation per use, four per window. Indexing with these is the same operation (a
    list index is turned into this LongTensor), so the bits are the same."""
    lists = [list(x) for x in lists]
    flat = torch.tensor([i for x in lists for i in x], dtype=torch.long).to(device)
    return list(flat.split([len(x) for x in lists]))


def window_counts(plan: DenoisePlan, num_frames: int, device: torch.device) -> torch.Tensor:
    """Per frame, the sum of the tent weights of the windows that cover it (the fusion's divisor)."""
    weights = tent_weights(plan.window, dtype=plan.dtype, device=device)
    count = torch.zeros(num_frames, dtype=plan.dtype, device=device)
    for idx in device_index(plan.windows, device):
        count[idx] += weights
    return count


class WindowStepper:
    """One backend's windows: the guided, tent-weighted UNet output of window ``j`` at step ``i``.

    Holds what every call reuses: the CFG pair's feed buffers, written in place per window (sample =
    [x | ref] for both halves, pose = [zeros | pose latents], allocated at the first window, when the
    PoseNet shape is known), the PoseNet cache, the timesteps on the device, the tent weights and the
    frame-wise guidance scales, and each window's frame indices on the device (``index[j]``).
    Outside the guidance interval a call feeds the pair's second (conditional) row of each buffer
    alone: batch 1, no copy. ``calls`` counts the UNet calls by batch size.
    """

    def __init__(self, backend: Backend, plan: DenoisePlan, cond: Conditioning, poses: PoseImages, num_frames: int, stream=None):
        device, dtype = backend.device, plan.dtype
        self.backend, self.plan, self.stream = backend, plan, stream
        self.w5 = tent_weights(plan.window, dtype=dtype, device=device).view(1, plan.window, 1, 1, 1)
        self.scales = guidance_scales(num_frames, plan.guidance_min, plan.guidance_max, dtype=dtype, device=device)
        self.embeds = cond.image_embeds.to(device, dtype)
        self.ids = cond.added_time_ids.to(device, dtype)
        self.ref_latents = cond.ref_latents.to(device, dtype)
        self.pose_cache = PoseLatentCache(backend, poses, [list(w) for w in plan.windows], dtype, plan.pose_cache_bytes,
                                          plan.pose_host_cache_bytes, stream)
        self.timesteps = plan.schedule.timesteps.to(device)  # once: no per-step host -> device copy
        self.index = device_index(plan.windows, device)  # once: indexing with lists syncs per use
        self.sample: torch.Tensor | None = None
        self.pose_pair: torch.Tensor | None = None
        self.calls: Counter = Counter()  # batch size (full pass) or (batch, depth) (shallow pass) -> UNet calls made
        cache = plan.cache
        self.features = FeatureCache(device, cache.budget_bytes, cache.host_budget_bytes) if cache is not None else None

    def contribution(self, latents: torch.Tensor, idx: torch.Tensor, frames: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """(1, window, c, h, w): window ``j``'s guided output times the tent weights at step ``i``.
        ``latents[:, idx]`` are the window's latents; ``frames`` its global frame indices (index
        tensors on the device, e.g. ``self.index[j]``: a list would cost a host sync per use)."""
        plan = self.plan
        sigma = plan.schedule.sigmas[i]  # a host scalar: nothing to read back
        c_in = 1.0 / ((sigma**2 + 1) ** 0.5)
        c = latents.shape[2]
        if self.sample is None:
            self.sample = torch.empty((2, plan.window, c + self.ref_latents.shape[1], *latents.shape[3:]), dtype=plan.dtype, device=latents.device)
            self.sample[:, :, c:] = self.ref_latents.unsqueeze(1)
        sample = self.sample
        guided = plan.cfg_active(i)
        if guided:
            torch.mul(latents[:, idx], c_in, out=sample[:1, :, :c])
            sample[1:, :, :c] = sample[:1, :, :c]
        else:  # the conditional row alone (its reference latents are in place since the allocation)
            torch.mul(latents[:, idx], c_in, out=sample[1:, :, :c])
        pose = self.pose_cache.get(j)
        pair = self.pose_pair
        if pair is None or pair.shape[1:] != pose.shape[1:] or pair.dtype != pose.dtype:
            pair = self.pose_pair = torch.zeros((2 * pose.shape[0], *pose.shape[1:]), dtype=pose.dtype, device=pose.device)
        cond_half = pair[pose.shape[0]:]
        if not plan.pose_active(i):  # outside --pose-start/end-percent: no pose in either half
            cond_half.zero_()
        elif plan.pose_strength != 1.0:
            torch.mul(pose, plan.pose_strength, out=cond_half)
        else:
            cond_half.copy_(pose)
        if not guided:  # outside the guidance interval: batch 1, the conditional prediction is the output
            feeds = {
                N.SAMPLE: sample[1:],
                N.TIMESTEP: self.timesteps[i].expand(1),
                N.ENCODER_HIDDEN_STATES: self.embeds[1:],
                N.ADDED_TIME_IDS: self.ids[1:],
                N.POSE_LATENTS: cond_half,
            }
            return self._unet(feeds, 1, i, j) * self.w5
        feeds = {
            N.SAMPLE: sample,
            N.TIMESTEP: self.timesteps[i].expand(2),
            N.ENCODER_HIDDEN_STATES: self.embeds,
            N.ADDED_TIME_IDS: self.ids,
            N.POSE_LATENTS: pair,
        }
        out = self._unet(feeds, 2, i, j)
        uncond, cond_pred = out[:1], out[1:]
        return (uncond + self.scales[:, frames] * (cond_pred - uncond)) * self.w5

    def _unet(self, feeds: dict, batch: int, i: int, j: int) -> torch.Tensor:
        """Window ``j``'s UNet call at step ``i``: a full pass (``unet``; ``unet_features`` where the
        window keeps its features for the cached steps that follow) or a cached step's shallow pass
        (``unet_shallow`` around them). Counted in ``calls``."""
        cache, kept = self.plan.cache, self.features
        stage = StageName.UNET
        if cache is not None and kept.fits(j):
            if not cache.full[i] and kept.has(j):  # (none kept: the first step after a resume runs in full)
                stage = StageName.UNET_SHALLOW
                feeds = {**feeds, N.DEEP_FEATURES: kept.get(j, batch), N.CACHE_DEPTH: cache.depth}
            elif cache.keeps(i):
                stage = StageName.UNET_FEATURES
                feeds = {**feeds, N.CACHE_DEPTH: cache.depth}
        outs = self.backend.run(stage, feeds, self.stream)
        if stage == StageName.UNET_FEATURES:
            kept.put(j, outs[N.DEEP_FEATURES], batch)
        self.calls[self.plan.call_key(i, cached=stage == StageName.UNET_SHALLOW)] += 1
        return outs[N.NOISE_PRED].to(self.plan.dtype)


def finish_step(acc: torch.Tensor, latents: torch.Tensor, count: torch.Tensor, plan: DenoisePlan, i: int) -> torch.Tensor:
    """Fused sum -> weighted mean -> one Euler step (in place: may return ``acc`` itself) -> NaN check."""
    schedule = plan.schedule
    acc /= count[None, :, None, None, None]
    latents = euler_step_inplace(acc, latents, schedule.sigmas[i], schedule.sigmas[i + 1])
    check_finite(latents, f"the latents after step {i + 1}/{schedule.num_steps}", plan.dtype)
    return latents


@torch.inference_mode()
def denoise(backend: Backend, plan: DenoisePlan, cond: Conditioning, poses: PoseImages, latents: torch.Tensor, hooks: StepHooks | None = None,
            stream=None, calls: Counter | None = None) -> torch.Tensor:
    """latents (1, F, 4, h, w), already scaled by the init sigma -> final latents (same shape).

    The latents stay in ``plan.dtype`` between steps (as the reference's do); each step's update is
    computed in fp32. Consumes ``latents``: its memory is reused as the accumulator.
    ``calls``: a Counter that receives the UNet calls made, by batch size (also when the loop stops early).
    (``mimic.runtime.parallel.denoise_parallel`` is this loop with the windows split over devices.)
    """
    device, schedule = backend.device, plan.schedule
    num_frames = latents.shape[1]
    count = window_counts(plan, num_frames, device)
    stepper = WindowStepper(backend, plan, cond, poses, num_frames, stream)
    total, n = plan.total_calls, len(plan.windows)
    acc = torch.empty(latents.shape, dtype=plan.dtype, device=device)
    try:
        for i in range(plan.start_step, schedule.num_steps):
            acc.zero_()
            for j, idx in enumerate(stepper.index):
                acc[:, idx] += stepper.contribution(latents, idx, idx, i, j)
                if hooks is not None:
                    hooks.on_progress(i * n + j + 1, total)
                    hooks.poll()
            # the step may return ``acc`` itself (fp32): the old latents' memory becomes the next accumulator
            latents, acc = finish_step(acc, latents, count, plan, i), latents
            if hooks is not None:
                hooks.on_step_end(i + 1, schedule.num_steps, latents)
    finally:
        if calls is not None:
            calls.update(stepper.calls)
    return latents


def euler_step_inplace(model_output: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """The reference's v-prediction Euler step without a latent-sized temporary.

    x0 = v c_out + x c_skip and x' = x + (x - x0)(s' - s)/s combine to
    x' = x (1 + r - r c_skip) - v r c_out with r = (s' - s)/s: one scaled in-place multiply and one
    ``add_(x, alpha=...)``. Same arithmetic as ``scheduler.euler_step`` up to float rounding (fp32).
    Overwrites ``model_output`` when it is fp32.
    """
    s, s_next = float(sigma), float(sigma_next)
    c_out = -s / (s * s + 1) ** 0.5
    c_skip = 1.0 / (s * s + 1)
    r = (s_next - s) / s
    x = sample.to(torch.float32)
    out = model_output.to(torch.float32)
    out.mul_(-r * c_out).add_(x, alpha=1.0 + r - r * c_skip)
    return out.to(model_output.dtype)
