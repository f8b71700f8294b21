"""An Open Job Description job template (what AWS Deadline Cloud runs): one task per job of a
jobs file, each task one idempotent ``mimic run --jobs FILE --job-index N --progress openjd``.

A task prints ``openjd_progress:`` / ``openjd_status:`` lines (and ``openjd_fail:`` on failure),
exits with the engine's distinct exit codes, publishes its output atomically and checkpoints as it
goes, so a task the scheduler retries (``deadline:maxRetriesPerTask`` in the bundle's
``parameter_values.yaml``) or cancels and requeues resumes from its last checkpoint. Cancelation
is NOTIFY_THEN_TERMINATE: SIGTERM first (``mimic`` stops cleanly, exit 143), SIGKILL later.
"""
from __future__ import annotations

from pathlib import Path

SPEC_VERSION = "jobtemplate-2023-09"

RENDER_SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
# One job of the jobs file per task; every path in the jobs file is on shared storage.
exec mimic run --jobs '{{Param.JobsFile}}' --job-index {{Task.Param.Job}} --progress openjd {{Param.MimicArgs}}
"""


def openjd_template(num_jobs: int | None = None, jobs_file: Path | None = None, mimic_args: str = "--weights /shared/models --backend tensorrt --engines /shared/engines --device cuda",
                    gpu: bool = True, name: str = "MimicMotion render") -> dict:
    """The job template as a dict (``yaml.safe_dump`` it). ``num_jobs``: the default task range
    ``1-N``; ``jobs_file``: the default jobs file."""
    jobs_param = {"name": "JobsFile", "type": "PATH", "objectType": "FILE", "dataFlow": "IN",
                  "description": "Jobs file (YAML/JSON list, as for `mimic run --jobs`) on shared storage"}
    if jobs_file is not None:
        jobs_param["default"] = str(jobs_file)
    range_param = {"name": "Jobs", "type": "STRING", "minLength": 1,
                   "description": "Which jobs of the file to render, as a range expression (1-N: all of them; 1,4-6: some)"}
    if num_jobs:
        range_param["default"] = f"1-{num_jobs}" if num_jobs > 1 else "1"
    step = {
        "name": "Render",
        "parameterSpace": {"taskParameterDefinitions": [{"name": "Job", "type": "INT", "range": "{{Param.Jobs}}"}]},
        "script": {
            "embeddedFiles": [{"name": "Render", "type": "TEXT", "runnable": True, "filename": "render.sh", "data": RENDER_SCRIPT}],
            "actions": {"onRun": {"command": "{{Task.File.Render}}", "cancelation": {"mode": "NOTIFY_THEN_TERMINATE", "notifyPeriodInSeconds": 60}}},
        },
    }
    if gpu:
        step["hostRequirements"] = {"amounts": [{"name": "amount.worker.gpu", "min": 1}]}
    return {
        "specificationVersion": SPEC_VERSION,
        "name": name,
        "description": "MimicMotion pose-guided video, one task per job; tasks resume from their checkpoints when retried.",
        "parameterDefinitions": [
            jobs_param,
            range_param,
            {"name": "MimicArgs", "type": "STRING", "default": mimic_args, "minLength": 1,
             "description": "Weights, engine and settings options for `mimic run` (paths on shared storage)"},
        ],
        "steps": [step],
    }


def parameter_values(retries: int = 2, max_failed_tasks: int = 100) -> dict:
    """A Deadline Cloud job bundle's ``parameter_values.yaml``: retries per task and the job's failure budget."""
    return {"parameterValues": [
        {"name": "deadline:maxRetriesPerTask", "value": retries},
        {"name": "deadline:maxFailedTasksCount", "value": max_failed_tasks},
    ]}


def write_bundle(folder: Path, template: dict, values: dict) -> list[Path]:
    """``folder/template.yaml`` and ``folder/parameter_values.yaml`` (a Deadline Cloud job bundle:
    ``deadline bundle submit FOLDER``; ``openjd run FOLDER/template.yaml`` runs it locally)."""
    import yaml

    from mimic.files import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "template.yaml", folder / "parameter_values.yaml"]
    atomic_write_text(paths[0], yaml.safe_dump(template, sort_keys=False, width=120))
    atomic_write_text(paths[1], yaml.safe_dump(values, sort_keys=False))
    return paths
