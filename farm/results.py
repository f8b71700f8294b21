"""What the farm reports: each attempt at a job (``Attempt``), what became of each job
(``JobResult``) and the whole run (``FarmReport``, written as the JSON farm report).

Frozen and free of Ray and torch: the scheduler builds them, ``Farm`` hands them to callers.
"""
from __future__ import annotations

import collections
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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


@dataclass(frozen=True)
class FarmReport:
    """Every job's result in submission order, the workers, the run's wall time (from the first
    worker up) and the cluster it ran on."""

    results: tuple[JobResult, ...]
    seconds: float
    workers: tuple[WorkerFacts, ...]
    cluster: str | None = None
    retries: int = 0

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if not r.ok]

    @property
    def exit_code(self) -> int:
        """0 when every job was rendered, 1 otherwise (each job's own code is in the report)."""
        return ExitCode.OK if not self.failed else ExitCode.FAILED

    def to_dict(self) -> dict:
        count = collections.Counter(r.outcome for r in self.results)
        return {
            "jobs": len(self.results), "done": count["done"], "failed": count["failed"], "cancelled": count["cancelled"],
            "seconds": round(self.seconds, 3), "retries": self.retries, "cluster": self.cluster,
            "workers": [w.to_dict() for w in self.workers], "results": [r.to_dict() for r in self.results],
        }

    def write(self, path: Path | str) -> Path:
        from mimic.files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)
