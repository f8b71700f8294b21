"""A thin Ray Data callable: render the rows of a dataset of jobs with a pool of stateful workers.

    import ray
    from mimic.farm import RenderBatch
    ds = ray.data.from_items([{"reference": "/shared/a.png", "driving": "/shared/d.mp4", "out": "/shared/a.mp4"}, ...])
    ds = ds.map_batches(RenderBatch, fn_constructor_kwargs={"weights": "/shared/models"},
                        batch_size=1, concurrency=4, num_gpus=1)
    ds.write_json("/shared/results")   # one row per job: output, outcome, error, exit_code, ...

Each actor loads the weights once (``FarmWorker``) and renders its rows through the one pipeline
with checkpoints, so Ray Data's own retries (unlimited by default there) resume where a lost
worker stopped. Rows take the jobs-file keys: reference, out, one of driving / poses / pose_frames,
optional ref_pose.
"""
from __future__ import annotations

from pathlib import Path

from mimic.errors import ExitCode
from mimic.farm.farm import make_spec
from mimic.farm.outcome import WorkerOutcome
from mimic.farm.worker import FarmWorker
from mimic.runtime.jobs import Job
from mimic.runtime.api import RuntimeOptions

_PATHS = ("reference", "out", "driving", "poses", "pose_frames", "ref_pose")
_OUT = ("output", "outcome", "error", "exit_code", "frames", "resumed_from_step", "worker")


class RenderBatch:
    def __init__(self, preset: str | None = None, weights: str | None = None, options: RuntimeOptions | None = None,
                 settings: dict | None = None, checkpoint_every: int = 1, checkpoint_dir: str | None = None):
        options = options or RuntimeOptions(device="cuda" if _has_cuda() else "cpu")
        spec = make_spec(preset=preset, weights=Path(weights) if weights else None, options=options, settings=settings,
                         checkpoint_every=checkpoint_every, checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None)
        self.worker = FarmWorker(spec, "data")
        self.worker.ready()
        self._count = 0

    def __call__(self, batch: dict) -> dict:
        n = len(batch["reference"])
        rows = {k: [] for k in _OUT}
        for i in range(n):
            paths = {k: _value(batch[k][i]) for k in _PATHS if k in batch}
            try:
                result = self.worker.render(self._count, Job(**paths))
            except Exception as err:  # a malformed row (e.g. two driving sources)
                result = WorkerOutcome(self._count, 1, "failed", self.worker.name, error=str(err),
                                       exit_code=getattr(err, "exit_code", ExitCode.BAD_INPUT))
            self._count += 1
            for k in _OUT:
                rows[k].append(getattr(result, k))
        return {**{k: list(v) for k, v in batch.items()}, **rows}


def _value(v):
    if v is None or (isinstance(v, float) and v != v):
        return None
    return str(v) if str(v) else None


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
