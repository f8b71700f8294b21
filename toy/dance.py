"""Procedural dances: smooth joint-angle trajectories (sums of a few sinusoids per angle), some
with turning (yaw) and stepping (root drift), sampled at :data:`DANCE_FPS`."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mimic.toy.puppet import PoseState

DANCE_FPS = 8.0

# (mean range, amplitude range, min, max) per joint angle, radians.
_ANGLES = {
    "r_arm": ((0.2, 1.2), (0.3, 1.1), -0.2, 2.8),
    "l_arm": ((0.2, 1.2), (0.3, 1.1), -0.2, 2.8),
    "r_elbow": ((0.1, 0.9), (0.2, 0.8), 0.0, 2.2),
    "l_elbow": ((0.1, 0.9), (0.2, 0.8), 0.0, 2.2),
    "r_leg": ((0.0, 0.25), (0.05, 0.3), -0.15, 0.7),
    "l_leg": ((0.0, 0.25), (0.05, 0.3), -0.15, 0.7),
    "r_knee": ((0.0, 0.3), (0.0, 0.4), 0.0, 1.0),
    "l_knee": ((0.0, 0.3), (0.0, 0.4), 0.0, 1.0),
    "lean": ((-0.05, 0.05), (0.0, 0.15), -0.25, 0.25),
}


@dataclass(frozen=True)
class Dance:
    """Per-angle sinusoid parameters; ``state(t)`` is the pose at ``t`` seconds."""

    terms: tuple[tuple[str, float, tuple[tuple[float, float, float], ...], float, float], ...]  # (name, mean, ((amp, freq, phase), ...), lo, hi)
    yaw: tuple[float, float, float]  # amplitude, frequency, phase
    step: tuple[float, float, float]  # root x drift: amplitude (fraction of height), frequency, phase
    bounce: float  # root y bob amplitude

    def state(self, t: float) -> PoseState:
        values = {}
        for name, mean, waves, lo, hi in self.terms:
            v = mean + sum(a * math.sin(2 * math.pi * f * t + ph) for a, f, ph in waves)
            values[name] = min(max(v, lo), hi)
        a, f, ph = self.yaw
        values["yaw"] = a * math.sin(2 * math.pi * f * t + ph)
        a, f, ph = self.step
        values["dx"] = a * math.sin(2 * math.pi * f * t + ph)
        knees = 0.5 * (values["r_knee"] + values["l_knee"])
        values["dy"] = self.bounce * knees
        return PoseState(**values)

    def states(self, num_frames: int, start: float = 0.0, fps: float = DANCE_FPS) -> list[PoseState]:
        return [self.state(start + i / fps) for i in range(num_frames)]


def random_dance(rng: np.random.Generator) -> Dance:
    """A dance with 1-2 sinusoids per angle (0.15-0.9 Hz); about half turn, about half step."""
    terms = []
    for name, ((m_lo, m_hi), (a_lo, a_hi), lo, hi) in _ANGLES.items():
        waves = tuple(
            (float(rng.uniform(a_lo, a_hi)) / (k + 1), float(rng.uniform(0.15, 0.9)), float(rng.uniform(0, 2 * math.pi)))
            for k in range(int(rng.integers(1, 3)))
        )
        terms.append((name, float(rng.uniform(m_lo, m_hi)), waves, lo, hi))
    yaw = (float(rng.uniform(0.3, 1.0)) if rng.random() < 0.5 else 0.0, float(rng.uniform(0.1, 0.35)), float(rng.uniform(0, 2 * math.pi)))
    step = (float(rng.uniform(0.03, 0.12)) if rng.random() < 0.5 else 0.0, float(rng.uniform(0.1, 0.4)), float(rng.uniform(0, 2 * math.pi)))
    return Dance(terms=tuple(terms), yaw=yaw, step=step, bounce=float(rng.uniform(0.0, 0.06)))
