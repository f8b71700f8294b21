"""Resumable jobs and the studio-scheduler contract of `mimic run`: a run killed with SIGKILL after
some steps resumes from its checkpoint with byte-identical PNG frames and fewer UNet calls; a
checkpoint of another job is ignored; `--progress openjd` lines; `--job-index`; the OpenJD
template validates with openjd-model."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from _runtime_helpers import SMALL_ARGS, make_inputs, run_cli
from mimic.spec import StageName

STEPS = 3  # SMALL_ARGS with one step more, so a kill after step 2 leaves work to resume
ARGS = list(SMALL_ARGS)
ARGS[ARGS.index("--steps") + 1] = str(STEPS)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture
def unet_calls(monkeypatch):
    """Counts UNet calls of the onnxruntime backend in this process."""
    from mimic.runtime.backend_ort import OnnxRuntimeBackend

    calls = []
    run = OnnxRuntimeBackend.run

    def counting(self, stage, feeds, stream=None):
        if stage == StageName.UNET:
            calls.append(stage)
        return run(self, stage, feeds, stream)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", counting)
    return calls


KILLER = textwrap.dedent("""
    import os, signal, sys
    from mimic.runtime import checkpoint

    save = checkpoint.CheckpointStore.save

    def save_then_die(self, step, num_steps, latents):
        ok = save(self, step, num_steps, latents)
        if step == int(os.environ["KILL_AFTER_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind, like a lost node
        return ok

    checkpoint.CheckpointStore.save = save_then_die
    from mimic.cli import main
    main(sys.argv[1:])
""")


def _frames(folder):
    import cv2

    return np.stack([cv2.imread(str(p)) for p in sorted(folder.glob("frame_*.png"))])


def _fresh_and_resumed(tmp_path, inputs, capsys, unet_calls, interrupt) -> None:
    """Render fresh; render again into another output, ``interrupt``ed after step 2 (keeps the
    checkpoint); run that again: it resumes, denoises only step 3 and writes the same frames."""
    ref, video = inputs
    job = ["run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), *ARGS]

    fresh = tmp_path / "fresh"
    code, _, stderr = run_cli([*job, "--out", str(fresh)], capsys)
    assert code == 0, stderr
    fresh_calls = len(unet_calls)
    assert fresh_calls and fresh_calls % STEPS == 0
    assert not (tmp_path / "fresh.checkpoint").exists()  # removed once the output was published

    out = tmp_path / "resumed"
    interrupt([*job, "--out", str(out)])
    assert not out.exists()
    manifest = json.loads((tmp_path / "resumed.checkpoint" / "checkpoint.json").read_text())
    assert manifest["step"] == 2 and manifest["num_steps"] == STEPS and manifest["seed"] == 42

    del unet_calls[:]
    code, stdout, stderr = run_cli([*job, "--out", str(out)], capsys)
    assert code == 0, stderr
    assert "resuming" in stdout and "resumed from the checkpoint saved after step 2" in stdout
    assert len(unet_calls) == fresh_calls // STEPS  # only step 3 was denoised again
    assert np.array_equal(_frames(out), _frames(fresh))  # byte-identical PNG frames (lossless)
    assert json.loads((out / "report.json").read_text())["resumed_from_step"] == 2
    assert json.loads((fresh / "report.json").read_text())["resumed_from_step"] is None
    assert not (tmp_path / "resumed.checkpoint").exists()


def test_interrupted_run_resumes_byte_identical_with_fewer_unet_calls(tiny_cache, tmp_path, inputs, capsys, unet_calls, monkeypatch):
    """In process: SIGTERM arrives (as the CLI's handler raises it) right after step 2's checkpoint."""
    from mimic.errors import Interrupted
    from mimic.runtime import checkpoint

    def interrupt(argv):
        save = checkpoint.CheckpointStore.save

        def save_then_stop(self, step, num_steps, latents):
            ok = save(self, step, num_steps, latents)
            if step == 2:
                raise Interrupted("SIGTERM", 143)
            return ok

        with monkeypatch.context() as m:
            m.setattr(checkpoint.CheckpointStore, "save", save_then_stop)
            code, _, stderr = run_cli(argv, capsys)
        assert code == 143, stderr

    _fresh_and_resumed(tmp_path, inputs, capsys, unet_calls, interrupt)


@pytest.mark.slow
def test_sigkilled_run_resumes_byte_identical_with_fewer_unet_calls(tiny_cache, tmp_path, inputs, capsys, unet_calls):
    """A real SIGKILL (no cleanup at all, like a lost node) of a `mimic run` process after step 2."""

    def interrupt(argv):
        env = {**os.environ, "KILL_AFTER_STEP": "2"}
        proc = subprocess.run([sys.executable, "-c", KILLER, *argv], env=env, capture_output=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    _fresh_and_resumed(tmp_path, inputs, capsys, unet_calls, interrupt)


def test_a_checkpoint_of_another_job_or_a_damaged_one_is_ignored(tmp_path, caplog):
    from mimic.runtime.checkpoint import CheckpointStore

    latents = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    folder = tmp_path / "o.mp4.checkpoint"
    assert CheckpointStore(folder, "key-a", 42).save(1, 3, latents)
    assert CheckpointStore(folder, "key-a", 42).save(2, 3, latents + 1)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "latents_0002.bin"]  # only the latest

    step, loaded = CheckpointStore(folder, "key-a").load()
    assert step == 2 and torch.equal(loaded, latents + 1)

    with caplog.at_level(logging.WARNING, logger="mimic"):
        assert CheckpointStore(folder, "key-b").load() is None  # other inputs / settings / weights
    assert "made for other inputs, settings or weights" in caplog.text

    data = folder / "latents_0002.bin"
    data.write_bytes(data.read_bytes()[:-4] + b"\0\0\0\0")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mimic"):
        assert CheckpointStore(folder, "key-a").load() is None
    assert "damaged checkpoint" in caplog.text


def test_a_checkpoint_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path, caplog):
    from mimic.runtime.checkpoint import CheckpointStore

    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    store = CheckpointStore(blocker / "o.mp4.checkpoint", "k")  # a folder cannot be made under a file
    with caplog.at_level(logging.WARNING, logger="mimic"):
        assert store.save(1, 2, torch.zeros(2)) is False
        assert store.save(2, 2, torch.zeros(2)) is False
    assert caplog.text.count("cannot write checkpoint") == 1 and store.disabled


def test_job_key_changes_with_inputs_settings_and_weights(tiny_cache, tmp_path, inputs):
    from mimic.model import presets
    from mimic.runtime.checkpoint import job_key
    from mimic.runtime.jobs import Job
    from mimic.runtime.pipeline import Components

    ref, video = inputs
    c = Components(backend=None, info=None, dtype=torch.float32, base_config=presets.TINY_GENERATION, detector=lambda: None)
    job = Job(reference=ref, driving=video, out=tmp_path / "o.mp4")
    key = job_key(job, c, "weights-1")
    assert key == job_key(job, c, "weights-1")
    assert key != job_key(job, c, "weights-2")
    assert key != job_key(Job(reference=ref, driving=video, out=tmp_path / "o.mp4", overrides={"seed": 7}), c, "weights-1")
    other = tmp_path / "ref.png"
    other.write_bytes(ref.read_bytes() + b"\0")
    assert key != job_key(Job(reference=other, driving=video, out=tmp_path / "o.mp4"), c, "weights-1")


def test_openjd_progress_lines_and_job_index(tiny_cache, tmp_path, inputs, capsys):
    ref, video = inputs
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"reference": str(ref), "driving": str(video), "out": str(tmp_path / name)} for name in ("a", "b")]))
    code, stdout, stderr = run_cli(["run", "--preset", "tiny", "--jobs", str(jobs), "--job-index", "2", "--progress", "openjd", *SMALL_ARGS], capsys)
    assert code == 0, stderr
    assert (tmp_path / "b").is_dir() and not (tmp_path / "a").exists()  # only the task's job
    progress = [int(line.split(":", 1)[1]) for line in stdout.splitlines() if line.startswith("openjd_progress:")]
    assert progress == sorted(progress) and progress[-1] == 100 and len(progress) > 3
    status = [line for line in stdout.splitlines() if line.startswith("openjd_status:")]
    assert any("denoising step 2/2" in s for s in status) and any("decode and write done" in s for s in status)
    assert "openjd_fail" not in stdout

    code, stdout, stderr = run_cli(["run", "--preset", "tiny", "--jobs", str(jobs), "--job-index", "3", "--progress", "openjd", *SMALL_ARGS], capsys)
    assert code == 2 and stderr.startswith("error: --job-index must be in 1..2")
    assert "openjd_fail: --job-index must be in 1..2" in stdout


def test_openjd_template_validates_with_one_task_per_job(tmp_path, inputs, capsys):
    model = pytest.importorskip("openjd.model")
    import yaml

    ref, video = inputs
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    jobs = bundle / "jobs.yaml"
    jobs.write_text("".join(f"- {{reference: {ref}, driving: {video}, out: o{k}.mp4}}\n" for k in range(3)))
    code, stdout, stderr = run_cli(["farm", "openjd-template", "-o", str(bundle), "--jobs", str(jobs), "--retries", "3"], capsys)
    assert code == 0, stderr
    template = model.decode_job_template(template=yaml.safe_load((bundle / "template.yaml").read_text()))
    values = model.preprocess_job_parameters(job_template=template, job_parameter_values={}, job_template_dir=bundle, current_working_dir=tmp_path)
    assert values["JobsFile"].value == str(jobs) and values["Jobs"].value == "1-3"
    job = model.create_job(job_template=template, job_parameter_values=values)
    (step,) = job.steps
    tasks = [dict((k, v.value) for k, v in t.items()) for t in model.StepParameterSpaceIterator(space=step.parameterSpace)]
    assert tasks == [{"Job": "1"}, {"Job": "2"}, {"Job": "3"}]
    script = step.script.embeddedFiles[0].data
    assert "--job-index {{Task.Param.Job}}" in script and "--progress openjd" in script
    assert step.script.actions.onRun.cancelation.mode.value == "NOTIFY_THEN_TERMINATE"
    assert {"name": "deadline:maxRetriesPerTask", "value": 3} in yaml.safe_load((bundle / "parameter_values.yaml").read_text())["parameterValues"]
