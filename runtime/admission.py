"""Admission: a ``Job`` becomes an ``AdmittedJob``, checked once and with its inputs opened once.

``admit`` runs every check that needs no model (the inputs exist and decode, the output can be
written without destroying an input of this or another job of the batch, the settings are valid
together, the memory check when given) and keeps what those checks opened, so ``generate`` does not
open them again: the reference is decoded (and cropped) once, the driving video probed once, the
pose file loaded once.

Memory: an admitted job holds only the cheap part of its inputs: the reference cropped to the
output size (~1.7 MB at 576 x 1024), the video's ``VideoInfo`` and the pose file's keypoints. Drawn
pose images (``--pose-frames`` folders or videos, a ``--ref-pose`` video), which may be large, are
read at render time, once (``inputs.read_inputs``), and freed with the job; so admitting a whole
batch up front (``mimic run --jobs``) costs little.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from mimic.errors import InputError
from mimic.model.config import GenerationConfig
from mimic.runtime.inputs import RawInputs, open_inputs, pose_file_source
from mimic.runtime.job_paths import check_job_paths
from mimic.runtime.jobs import Job


@dataclass(frozen=True)
class AdmittedJob:
    """A job that passed admission: its resolved settings, its inputs opened once (``RawInputs``:
    drawn pose images still unread) and its warnings so far (they go into its report)."""

    job: Job
    config: GenerationConfig
    inputs: RawInputs
    warnings: tuple[str, ...] = ()

    @property
    def out(self):
        """The job's output (what messages and reports name a job by)."""
        return self.job.out


def admit(job: Job | AdmittedJob, base_config: GenerationConfig, *, audio: bool = False, others: Sequence[Job | AdmittedJob] = (),
          memory_check: Callable[[GenerationConfig], object] | None = None) -> AdmittedJob:
    """Check ``job`` and open its inputs; raises the first ``InputError`` (one line naming the flag).

    ``base_config``: the run's settings (the job's overrides go on top). ``audio``: the driving
    video's audio is to be copied (the output must be a video). ``others``: the rest of its batch
    (no two jobs write one output; no output replaces another job's input). ``memory_check(config)``:
    the loaded engine's check of the settings: raises when the job cannot fit (``memory.preflight``)
    or its backend cannot run them (``MimicMotion.check_backend``). An ``AdmittedJob`` is returned as it is."""
    if isinstance(job, AdmittedJob):
        return job
    others = [o.job if isinstance(o, AdmittedJob) else o for o in others]
    others = [o for o in others if o is not job]
    target = _canonical(job.out)
    if any(_canonical(o.out) == target for o in others):
        raise InputError(f"--out {job.out}: another job writes the same output")
    check_job_paths(job, others, audio)  # exists, is a file, the output is writable and destroys no input
    config = job.config(base_config)  # the job's settings are valid together with the run's
    inputs = open_inputs(job, config)  # the reference decodes, the video probes, the pose file loads
    if memory_check is not None:
        memory_check(config)
    warnings = list(job.warnings)  # from normalising the job's settings (a rounded resolution)
    if audio and job.driving is None:
        if job.poses is not None and inputs.pose_file is not None:
            if pose_file_source(job.poses, inputs.pose_file) is None:
                source = inputs.pose_file.source or "(not recorded)"
                warnings.append(f"--audio: the source video of {job.poses}, {source}, is not found (nor beside the pose file): the output has no audio")
        else:
            warnings.append(f"--audio: {job.pose_frames} is drawn pose frames, not the source video: the output has no audio")
    return AdmittedJob(job, config, inputs, tuple(warnings))


def _canonical(path: Path) -> Path:
    return Path(path).expanduser().resolve()
