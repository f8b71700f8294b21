"""`mimic farm` and the `Farm` API on a local Ray cluster the module starts once (127.0.0.1 only,
2 CPUs, token authentication, stopped at the end; each test bounded by an alarm): outputs
byte-identical to sequential `mimic run --jobs`, a bad job failing alone, a worker killed mid-job
replaced and its job retried (resuming from its checkpoint) with identical output."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from _runtime_helpers import SMALL_ARGS, make_inputs, run_cli
from mimic.runtime.pipeline import Hooks

pytest.importorskip("ray")

TEST_SECONDS = 240  # per test, cluster start included


@pytest.fixture(autouse=True)
def bounded():
    """Fail (and cancel the farm, which unwinds on any BaseException) instead of hanging."""

    def expire(signum, frame):
        raise TimeoutError(f"farm test exceeded {TEST_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def cluster(tiny_layout):
    """One local cluster for the module (the tiny weights exist before workers start)."""
    from mimic.farm.cluster import Cluster

    c = Cluster(num_cpus=2).open()
    assert c.local and c.gcs_address.startswith("127.0.0.1:")
    assert os.environ["RAY_AUTH_MODE"] == "token"
    yield c
    c.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    ref, video = make_inputs(folder)
    _, short = make_inputs(folder / "short", frames=3)
    return ref, video, short


def _jobs(ref, video, folder: Path) -> list[dict]:
    return [
        {"reference": str(ref), "driving": str(video), "out": str(folder / "a")},
        {"reference": str(ref), "driving": str(video), "out": str(folder / "c"), "guidance_max": 3.0, "seed": 5},
    ]


@pytest.fixture(scope="module")
def sequential(tiny_cache, inputs, tmp_path_factory):
    """The jobs rendered by `mimic run --jobs --sequential` (PNG folders: lossless)."""
    ref, video, _ = inputs
    folder = tmp_path_factory.mktemp("sequential")
    jobs = folder / "jobs.json"
    jobs.write_text(json.dumps(_jobs(ref, video, folder)))
    from mimic.cli import main

    try:
        main(["run", "--preset", "tiny", "--jobs", str(jobs), "--sequential", "--progress", "none", *SMALL_ARGS])
    except SystemExit as exit_:
        assert not exit_.code
    return folder


def _frames(folder: Path) -> list[str]:
    """The sha256 of every PNG frame, in order (the PNG writer is deterministic)."""
    import hashlib

    frames = sorted(folder.glob("frame_*.png"))
    assert frames
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in frames]


def test_farm_renders_like_sequential_run_and_a_bad_job_fails_alone(cluster, sequential, inputs, tmp_path, capsys):
    """Also: the jobs file in the CLI's words (``ref``, ``fps``...) renders like the old names, a bad
    value (``steps: two``) fails alone, and the run's rounded --resolution is in every job's report."""
    ref, video, _ = inputs
    jobs = _jobs(ref, video, tmp_path)
    jobs[0] = {"ref": jobs[0]["reference"], "driving": jobs[0]["driving"], "out": jobs[0]["out"],  # the CLI's words (sequential: the old names)
               "fps": 15, "resolution": 140}  # a job's own rounding (to 128, as SMALL_ARGS): its warning in its report
    jobs.insert(1, {"reference": str(tmp_path / "missing.png"), "driving": str(video), "out": str(tmp_path / "bad")})
    jobs.append({"ref": str(ref), "driving": str(video), "out": str(tmp_path / "bad2"), "steps": "two"})
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(json.dumps(jobs))
    code, stdout, stderr = run_cli(["farm", "--jobs", str(jobs_file), "--workers", "2", "--preset", "tiny", "--device", "cpu", *SMALL_ARGS,
                                    "--resolution", "150"], capsys)  # rounded to SMALL_ARGS' 128, with a warning
    assert code == 1, (stdout, stderr)  # not every job rendered
    for name in ("a", "c"):
        assert _frames(tmp_path / name) == _frames(sequential / name), name
        assert "resolution 150 is not a multiple of 64; using 128" in json.loads((tmp_path / name / "report.json").read_text())["warnings"]
    assert "resolution 140 is not a multiple of 64; using 128" in json.loads((tmp_path / "a" / "report.json").read_text())["warnings"]
    assert _frames(tmp_path / "a") != _frames(tmp_path / "c")
    report = json.loads((tmp_path / "jobs.farm-report.json").read_text())
    assert (report["jobs"], report["done"], report["failed"]) == (4, 2, 2)
    bad2 = report["results"][3]
    assert bad2["outcome"] == "failed" and bad2["exit_code"] == 2 and bad2["error"] == "--steps must be an integer, got 'two'"
    assert {w["worker"] for w in report["workers"]} == {"w0", "w1"}
    by_out = {Path(r["out"]).name: r for r in report["results"]}
    bad = by_out["bad"]
    assert bad["outcome"] == "failed" and bad["attempts"] == 0 and bad["exit_code"] == 2 and "missing.png" in bad["error"]
    for name in ("a", "c"):
        r = by_out[name]
        assert r["outcome"] == "done" and r["attempts"] == 1 and r["worker"] in ("w0", "w1") and r["seconds"] > 0 and r["frames"] == 10
    assert not (tmp_path / "bad").exists()
    assert "error: job 2" in stderr and "error: job 4" in stderr and "farm: 2 done, 2 failed" in stderr
    # the summary accounts for the whole run (this module's cluster was up before: no cluster start-up here)
    summary = next(line for line in stderr.splitlines() if line.startswith("farm: 2 done, 2 failed in "))
    total, parts = summary.split(" in ", 1)[1].split(": ", 1)
    seconds = {label: float(s) for s, label in (part.split(" s ", 1) for part in parts.split(", "))}
    assert {"worker start-up (loading the weights)", "rendering"} <= set(seconds), summary
    assert abs(sum(seconds.values()) - float(total.removesuffix(" s"))) <= 0.06 * len(seconds), summary
    assert set(report["phases"]) == {"workers", "rendering"} and report["wall_seconds"] > report["seconds"] == report["phases"]["rendering"]


@pytest.mark.slow
def test_a_worker_with_two_devices_renders_like_sequential_run(cluster, sequential, inputs, tmp_path, capsys):
    """--devices-per-worker 2: each job's windows split over the worker's two (CPU) devices."""
    ref, video, _ = inputs
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(_jobs(ref, video, tmp_path)))
    code, stdout, stderr = run_cli(["farm", "--jobs", str(jobs_file), "--workers", "1", "--devices-per-worker", "2", "--preset", "tiny",
                                    "--device", "cpu", *SMALL_ARGS], capsys)
    assert code == 0, (stdout, stderr)
    for name in ("a", "c"):
        assert _frames(tmp_path / name) == _frames(sequential / name), name
    report = json.loads((tmp_path / "jobs.farm-report.json").read_text())
    assert [w.get("device") for w in report["workers"]] == ["cpu,cpu"]


@pytest.mark.slow
def test_more_workers_than_jobs_start_one_per_job_rendering_with_the_submitting_thread_counts(cluster, sequential, inputs, tmp_path, capsys):
    """--workers 2 for one job starts one worker (an info line says so); the job's report entry and
    the worker's facts name the thread counts it rendered with, the submitting process's (torch's
    and onnxruntime's default), so its frames equal `mimic run`'s."""
    import torch

    from mimic.farm.farm import ort_default_threads

    ref, video, _ = inputs
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(_jobs(ref, video, tmp_path)[:1]))
    code, stdout, stderr = run_cli(["farm", "--jobs", str(jobs_file), "--workers", "2", "--preset", "tiny", "--device", "cpu",
                                    "--progress", "none", *SMALL_ARGS], capsys)
    assert code == 0, (stdout, stderr)
    assert "farm: 2 worker(s) for 1 job(s): starting 1" in stdout
    report = json.loads((tmp_path / "jobs.farm-report.json").read_text())
    threads = {"torch": torch.get_num_threads(), "onnxruntime": ort_default_threads()}
    assert report["results"][0]["threads"] == threads
    assert [(w["torch_threads"], w["onnxruntime_threads"]) for w in report["workers"]] == [(threads["torch"], threads["onnxruntime"])]
    assert _frames(tmp_path / "a") == _frames(sequential / "a")


def test_a_speed_preset_job_renders_through_the_farm_like_run(cluster, inputs, tmp_path, capsys):
    """A jobs-file ``speed: fast`` (AYS steps with deep-feature caching: onnxruntime's cached-step
    graphs are exported into the cache by the first job that asks) renders through the farm as
    `mimic run --jobs` renders it, and its report says so."""
    ref, video, _ = inputs
    outputs = {}
    for how in ("run", "farm"):
        jobs_file = tmp_path / f"{how}.json"
        jobs_file.write_text(json.dumps([{"ref": str(ref), "driving": str(video), "out": str(tmp_path / how / "f"), "speed": "fast"}]))
        argv = ["run", "--jobs", str(jobs_file), "--sequential"] if how == "run" else ["farm", "--jobs", str(jobs_file), "--workers", "1"]
        code, stdout, stderr = run_cli([*argv, "--preset", "tiny", "--device", "cpu", "--progress", "none", *SMALL_ARGS], capsys)
        assert code == 0, (stdout, stderr)
        outputs[how] = _frames(tmp_path / how / "f")
        report = json.loads((tmp_path / how / "f" / "report.json").read_text())
        assert report["config"]["speed"] == "fast" and report["config"]["steps"] == 6 and report["config"]["cache_interval"] == 2
        assert report["unet_cached_calls_by_batch"]  # the cached steps ran their shallow pass
    assert outputs["farm"] == outputs["run"]


class _DieOnce(Hooks):
    """Ends the worker process (as a crash or a lost node would) right after step 1's checkpoint,
    the first time only (a marker file says it happened)."""

    def __init__(self, marker: str):
        self.marker = marker

    def on_step_end(self, step, num_steps, latents):
        if step == 1 and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)


class _KillFirstJob:
    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, index, job, attempt):
        return _DieOnce(self.marker) if index == 0 else None


@pytest.mark.slow
def test_killed_worker_is_replaced_and_its_job_resumes_identically_while_bad_input_is_not_retried(cluster, sequential, inputs, tmp_path):
    from ray import cloudpickle

    from mimic.farm import Farm
    from mimic.runtime.jobs import Job
    from mimic.runtime.api import RuntimeOptions

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hooks travel to the workers
    ref, video, short = inputs
    settings = {"steps": 2, "window": 6, "overlap": 2, "resolution": 128, "sample_stride": 1}
    marker = tmp_path / "died"
    jobs = [Job(reference=ref, driving=video, out=tmp_path / "a"), Job(reference=ref, driving=short, out=tmp_path / "short")]
    # pad_short=False: the 3-frame clip is bad input, found only while rendering (in the worker)
    with Farm(preset="tiny", settings=settings, options=RuntimeOptions(pad_short=False), workers=2, retries=2, hooks=_KillFirstJob(str(marker))) as farm:
        futures = farm.submit(jobs)
        killed, bad = [f.result(timeout=TEST_SECONDS) for f in futures]
    assert marker.exists()  # the worker really died
    assert killed.outcome == "done" and killed.attempts == 2
    assert killed.history[0].outcome == "lost" and killed.history[1].outcome == "done"
    assert killed.history[1].pid != int(marker.read_text())
    assert killed.resumed_from_step == 1  # the retry continued from the dead worker's checkpoint
    assert _frames(tmp_path / "a") == _frames(sequential / "a")
    assert not (tmp_path / "a.checkpoint").exists()
    assert bad.outcome == "failed" and bad.attempts == 1 and bad.exit_code == 2 and "shorter than the window" in bad.error
    assert not (tmp_path / "short").exists()


@pytest.mark.slow
def test_ctrl_c_cancels_the_farm_cleanly_and_keeps_checkpoints(tiny_cache, inputs, tmp_path):
    """A fresh `mimic farm` process with its own local cluster (the embedded default), Ctrl-C to
    its whole process group (as a terminal sends it) while the jobs denoise: exit 130, no output
    and no temporary file, the checkpoints kept for the next run, the report says cancelled."""
    import subprocess
    import time

    ref, video, _ = inputs
    jobs = [{"reference": str(ref), "driving": str(video), "out": str(tmp_path / n)} for n in ("a", "b", "c")]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    args = list(SMALL_ARGS)
    args[args.index("--steps") + 1] = "200"  # still denoising when Ctrl-C comes
    cmd = [sys.executable, "-m", "mimic.cli", "farm", "--jobs", str(tmp_path / "jobs.json"), "--workers", "2", "--preset", "tiny",
           "--device", "cpu", "--progress", "none", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + TEST_SECONDS - 60
        while not list(tmp_path.glob("*.checkpoint/checkpoint.json")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint in time"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.stderr.read().decode().splitlines()[-1].startswith("interrupted (SIGINT)")
    report = json.loads((tmp_path / "jobs.farm-report.json").read_text())
    assert report["cancelled"] == 3 and report["done"] == 0
    assert not any((tmp_path / n).exists() for n in ("a", "b", "c"))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert list(tmp_path.glob("*.checkpoint/checkpoint.json"))  # the next run resumes from these


@pytest.mark.slow
def test_ray_data_callable_renders_rows_like_the_cli(tiny_cache, sequential, inputs, tmp_path):
    """The Ray Data callable, called as map_batches would call it (one batch of rows)."""
    from mimic.farm import RenderBatch
    from mimic.runtime.api import RuntimeOptions

    ref, video, _ = inputs
    settings = {"steps": 2, "window": 6, "overlap": 2, "resolution": 128, "sample_stride": 1}
    render = RenderBatch(preset="tiny", settings=settings, options=RuntimeOptions())
    batch = {"reference": np.array([str(ref), str(ref)]), "driving": np.array([str(video), str(tmp_path / "gone.mp4")]),
             "out": np.array([str(tmp_path / "a"), str(tmp_path / "b")])}
    rows = render(batch)
    assert list(rows["outcome"]) == ["done", "failed"] and rows["exit_code"][1] == 2
    assert list(rows["out"]) == list(batch["out"])
    assert _frames(tmp_path / "a") == _frames(sequential / "a")
