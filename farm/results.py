"""What the farm reports: each attempt at a job (``Attempt``), what became of each job
(``JobResult``) and the whole run (``FarmReport``, written as the JSON farm report).

Frozen and free of Ray and torch: the scheduler builds them, ``Farm`` hands them to callers.
"""
from __future__ import annotations

import collections
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from mimic.errors import ExitCode
from mimic.farm.outcome import WorkerFacts

if TYPE_CHECKING:
    from mimic.runtime.jobs import Job


@dataclass(frozen=True)
class Attempt:
    """One attempt at a job: the worker that started it and how it ended (done | failed |
    cancelled | lost: the worker died under it) and why."""

    attempt: int
    worker: str
    outcome: str
    node: str | None = None
    pid: int | None = None
    error: str | None = None
    seconds: float | None = None

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        if self.seconds is not None:
            d["seconds"] = round(self.seconds, 3)
        return d


@dataclass(frozen=True)
class JobResult:
    """What became of one job. ``index``: its place in submission order (0-based); ``out``: the
    entry's output (``job`` is None for a jobs-file entry that could not become a job);
    ``outcome``: pending | done | failed | cancelled; ``attempts``: how many workers started it;
    ``history``: one ``Attempt`` each."""

    index: int
    out: Path | None
    job: Job | None = None
    outcome: str = "pending"
    attempts: int = 0
    worker: str | None = None
    node: str | None = None
    seconds: float = 0.0
    error: str | None = None
    exit_code: int | None = None
    output: str | None = None
    frames: int = 0
    resumed_from_step: int | None = None
    history: tuple[Attempt, ...] = ()
    threads: tuple[int | None, int | None] = (None, None)  # (torch, onnxruntime) of the attempt that ended it

    @property
    def ok(self) -> bool:
        return self.outcome == "done"

    def to_dict(self) -> dict:
        return {
            "index": self.index + 1, "out": str(self.out) if self.out is not None else None,
            "reference": str(self.job.reference) if self.job is not None else None, "outcome": self.outcome,
            "attempts": self.attempts, "worker": self.worker, "node": self.node, "seconds": round(self.seconds, 3),
            "error": self.error, "exit_code": self.exit_code, "output": self.output, "frames": self.frames,
            "resumed_from_step": self.resumed_from_step, "history": [a.to_dict() for a in self.history],
            "threads": dict(zip(("torch", "onnxruntime"), self.threads)) if any(self.threads) else None,
        }


# What the phases of a farm run are called in its summary line and report (``FarmReport.phases``).
PHASE_LABELS = {
    "preparing": "preparing (jobs file, weights, screening)",
    "sizing": "sizing the workers (memory of one job, measured)",
    "cluster": "Ray cluster start-up",
    "workers": "worker start-up (loading the weights)",
    "rendering": "rendering",
    "shutdown": "shutdown",
}


def time_summary(wall_s: float, phases: Sequence[tuple[str, float]], min_s: float = 0.05) -> str:
    """``146.0 s: 45.0 s Ray cluster start-up, 101.0 s rendering``: the whole ``wall_s`` split into
    ``phases`` ((name, seconds), in order; names from ``PHASE_LABELS`` or any text). What the phases
    do not cover is shown as ``other``, so the parts always add up to the total; phases under
    ``min_s`` are folded into it."""
    shown = [(PHASE_LABELS.get(name, name), s) for name, s in phases if s >= min_s]
    other = wall_s - sum(s for _, s in shown)
    if other >= min_s:
        shown.append(("other", other))
    if not shown:
        return f"{wall_s:.1f} s"
    return f"{wall_s:.1f} s: " + ", ".join(f"{s:.1f} s {label}" for label, s in shown)


@dataclass(frozen=True)
class FarmReport:
    """Every job's result in submission order, the workers, the rendering time (``seconds``: from the
    first worker up), the cluster it ran on, and the whole run: ``phases`` ((name, seconds) in
    order: sizing, Ray cluster start-up, worker start-up, rendering; ``PHASE_LABELS``) adding up to
    ``wall_seconds`` (from the farm's creation to this report)."""

    results: tuple[JobResult, ...]
    seconds: float
    workers: tuple[WorkerFacts, ...]
    cluster: str | None = None
    retries: int = 0
    phases: tuple[tuple[str, float], ...] = ()
    wall_seconds: float | None = None

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if not r.ok]

    @property
    def exit_code(self) -> int:
        """0 when every job was rendered, 1 otherwise (each job's own code is in the report)."""
        return ExitCode.OK if not self.failed else ExitCode.FAILED

    def summary(self, more: Sequence[tuple[str, float]] = (), before: Sequence[tuple[str, float]] = ()) -> str:
        """``4 done, 0 failed in 146.0 s: 45.0 s Ray cluster start-up, ..., 101.0 s rendering``: the
        whole wall time (``before``/``more``: phases the caller timed before and after the farm's)."""
        done = len(self.results) - len(self.failed)
        phases = [*before, *self.phases, *more]
        wall = sum(s for _, s in before) + (self.wall_seconds if self.wall_seconds is not None else self.seconds) + sum(s for _, s in more)
        return f"{done} done, {len(self.failed)} failed in {time_summary(wall, phases or [('rendering', self.seconds)])}"

    def to_dict(self) -> dict:
        count = collections.Counter(r.outcome for r in self.results)
        return {
            "jobs": len(self.results), "done": count["done"], "failed": count["failed"], "cancelled": count["cancelled"],
            "seconds": round(self.seconds, 3), "wall_seconds": round(self.wall_seconds, 3) if self.wall_seconds is not None else None,
            "phases": {name: round(s, 3) for name, s in self.phases}, "retries": self.retries, "cluster": self.cluster,
            "workers": [w.to_dict() for w in self.workers], "results": [r.to_dict() for r in self.results],
        }

    def write(self, path: Path | str) -> Path:
        from mimic.files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)
