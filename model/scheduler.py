"""Euler v-prediction with Karras sigmas: the sampler of SVD img2vid-xt 1.1 (spec 3.5); Align Your
Steps noise levels as an option (``kind="ays"``).

Pure functions over an explicit step index, plus :class:`EulerKarrasScheduler`, which reproduces
the released pipeline's use of diffusers' ``EulerDiscreteScheduler`` (including its per-step
random draw, so a seeded generator advances exactly as upstream's does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SchedulerConfig:
    """The scheduler constants that matter at inference (SVD-xt-1-1's scheduler_config.json)."""

    sigma_min: float = 0.002
    sigma_max: float = 700.0
    rho: float = 7.0
    prediction_type: str = "v_prediction"

    @classmethod
    def from_json_dict(cls, cfg: dict) -> "SchedulerConfig":
        """Reads the fields we use and rejects configurations this sampler does not implement."""
        from mimic.errors import WeightsError

        if cfg.get("prediction_type", "v_prediction") != "v_prediction":
            raise WeightsError(f"scheduler prediction_type {cfg.get('prediction_type')!r} is not supported (need v_prediction)")
        if not cfg.get("use_karras_sigmas", True):
            raise WeightsError("scheduler use_karras_sigmas=false is not supported (SVD uses Karras sigmas)")
        return cls(sigma_min=float(cfg.get("sigma_min", 0.002)), sigma_max=float(cfg.get("sigma_max", 700.0)))


def karras_sigmas(num_steps: int, cfg: SchedulerConfig = SchedulerConfig()) -> np.ndarray:
    """sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, float64, no trailing 0."""
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    ramp = np.linspace(0, 1, num_steps)
    lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
    return (hi + ramp * (lo - hi)) ** cfg.rho


@dataclass(frozen=True)
class Schedule:
    """Everything the denoising loop needs per step, as float32 tensors (as diffusers keeps them)."""

    sigmas: torch.Tensor  # (n+1,) float32, last is 0
    timesteps: torch.Tensor  # (n,) float32, 0.25 * ln(sigma)
    init_noise_sigma: float

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    def c_in(self, i: int) -> torch.Tensor:
        s = self.sigmas[i]
        return 1.0 / ((s**2 + 1) ** 0.5)


# Align Your Steps (Sabour et al. 2024, arXiv 2404.14507): the published 10-step noise levels for SVD.
AYS_SVD_SIGMAS = (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002)
SCHEDULES = ("karras", "ays")


def ays_sigmas(num_steps: int) -> np.ndarray:
    """The ``num_steps`` noise levels of Align Your Steps for SVD, float64, no trailing 0.

    The published list has 11 levels for 10 steps; other step counts resample it on a uniform grid
    linearly in log sigma (num_steps + 1 levels). The last level is replaced by 0 (it is the end of
    the last step, which ``make_schedule`` appends), as the published integrations do: 10 steps run
    700 -> 54.5 -> ... -> 0.034 -> 0.
    """
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    published = np.array(AYS_SVD_SIGMAS, dtype=np.float64)
    if num_steps + 1 == len(published):
        levels = published
    else:
        grid = np.linspace(0.0, 1.0, len(published))
        levels = np.exp(np.interp(np.linspace(0.0, 1.0, num_steps + 1), grid, np.log(published)))
    return levels[:-1]


def schedule_sigmas(num_steps: int, cfg: SchedulerConfig = SchedulerConfig(), kind: str = "karras") -> np.ndarray:
    """The ``num_steps`` noise levels of schedule ``kind`` (float64, the trailing 0 not included)."""
    if kind == "karras":
        return karras_sigmas(num_steps, cfg)
    if kind == "ays":
        return ays_sigmas(num_steps)
    raise ValueError(f"unknown schedule {kind!r}; known: {', '.join(SCHEDULES)}")


def make_schedule(num_steps: int, cfg: SchedulerConfig = SchedulerConfig(), kind: str = "karras") -> Schedule:
    """Karras (the released sampler) by default; ``kind="ays"`` for Align Your Steps."""
    sig32 = torch.from_numpy(schedule_sigmas(num_steps, cfg, kind).astype(np.float32))
    timesteps = torch.stack([0.25 * s.log() for s in sig32])
    sigmas = torch.cat([sig32, torch.zeros(1)])
    # "leading" spacing: init sigma is sqrt(sigma_max^2 + 1) computed from the float32 max sigma.
    init = float((sig32.max() ** 2 + 1) ** 0.5)
    return Schedule(sigmas=sigmas, timesteps=timesteps, init_noise_sigma=init)


def scale_model_input(sample: torch.Tensor, schedule: Schedule, i: int) -> torch.Tensor:
    """x / sqrt(sigma_i^2 + 1), keeping the sample's dtype (the 0-d sigma does not promote)."""
    sigma = schedule.sigmas[i].to(sample.device)
    return sample / ((sigma**2 + 1) ** 0.5)


def euler_step(model_output: torch.Tensor, sample: torch.Tensor, schedule: Schedule, i: int) -> torch.Tensor:
    """One Euler step for v-prediction (s_churn = 0), math in fp32, result in the model output dtype."""
    x = sample.to(torch.float32)
    sigma = schedule.sigmas[i].to(x.device)
    sigma_next = schedule.sigmas[i + 1].to(x.device)
    x0 = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (x / (sigma**2 + 1))
    derivative = (x - x0) / sigma
    return (x + derivative * (sigma_next - sigma)).to(model_output.dtype)


def discard_step_noise(model_output: torch.Tensor, generator: torch.Generator | None) -> None:
    """diffusers' Euler step draws (and with s_churn=0 ignores) one randn of the output's shape per
    step; drawing it keeps a seeded generator in step with the released pipeline."""
    if generator is None:
        return
    if generator.device.type != model_output.device.type:
        torch.randn(model_output.shape, generator=generator, device=generator.device, dtype=model_output.dtype)
    else:
        torch.randn(model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype)


def sigma_table(num_steps: int = 25, cfg: SchedulerConfig = SchedulerConfig()) -> list[tuple[float, float, float]]:
    """(sigma, t, c_in) per step, as printed in spec 3.5."""
    sig = karras_sigmas(num_steps, cfg)
    return [(float(s), 0.25 * math.log(s), 1.0 / math.sqrt(s * s + 1)) for s in sig]
