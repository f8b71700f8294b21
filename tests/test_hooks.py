"""Observers and job control, composed (``mimic.runtime.pipeline``): observers fan out in list
order, control pieces join (gates nest, polls all run, flags OR-ed), checkpoints save first and make
the job deterministic, the executor's gate joins the caller's control instead of replacing it."""
from __future__ import annotations

import contextlib

import pytest

from _runtime_helpers import make_inputs, one_torch_thread
from mimic.runtime.pipeline import Hooks, JobControl, Observers

SETTINGS = {"steps": 2, "window": 4, "overlap": 1, "resolution": 64, "sample_stride": 1}


class _Log:
    """An observer with two of the three callbacks (no base class)."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def on_stage_end(self, stage, seconds):
        self.log.append((self.name, "stage", stage))

    def on_step_end(self, step, num_steps, latents):
        self.log.append((self.name, "step", step))


def test_observers_fan_out_in_list_order_to_those_that_listen():
    log = []

    class Progress(Hooks):
        def on_progress(self, done, total):
            log.append(("p", "progress", done))

    observers = Observers.of([_Log("a", log), None, [Progress(), Observers.of(_Log("b", log))]])
    observers.on_stage_end("encode", 1.0)
    observers.on_progress(3, 8)
    observers.on_step_end(1, 2, None)
    assert log == [("a", "stage", "encode"), ("b", "stage", "encode"), ("p", "progress", 3), ("a", "step", 1), ("b", "step", 1)]
    assert Observers.of(None).observers == () and Observers.of(observers) is observers


@pytest.mark.parametrize("name", ["poll", "denoise_turn", "synchronize", "deterministic"])
def test_an_observer_carrying_job_control_is_refused_not_ignored(name):
    observer = type("Mixed", (Hooks,), {name: True})()
    with pytest.raises(TypeError, match=f"Mixed has job control \\({name}\\): pass it as control=JobControl"):
        Observers.of([_Log("a", []), observer])


def test_control_pieces_join_gates_nest_polls_all_run_flags_or():
    log = []

    def gate(name):
        @contextlib.contextmanager
        def turn():
            log.append(f"enter {name}")
            yield
            log.append(f"exit {name}")

        return turn

    outer = JobControl(turns=(gate("outer"),), polls=(lambda: log.append("poll outer"),), synchronize=True)
    inner = JobControl(turns=[gate("inner")], polls=[lambda: log.append("poll inner")], deterministic=True)
    joined = JobControl.join(outer, None, inner)
    assert (joined.synchronize, joined.deterministic) == (True, True)
    assert JobControl.join() == JobControl() and not JobControl().synchronize
    with joined.denoise_turn():
        log.append("denoise")
    joined.poll()
    assert log == ["enter outer", "enter inner", "denoise", "exit inner", "exit outer", "poll outer", "poll inner"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"), frames=6)


@pytest.fixture(scope="module")
def mm(tiny_cache):
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="torch")) as mm:
        yield mm


def _job(tmp_path, inputs, name="out.mp4"):
    from mimic.runtime.jobs import Job

    ref, video = inputs
    return Job(reference=ref, driving=video, out=tmp_path / name, overrides=dict(SETTINGS))


def test_a_checkpoint_is_saved_before_other_observers_see_the_step_and_makes_the_job_deterministic(mm, inputs, tmp_path):
    import json

    from mimic.runtime.checkpoint import CheckpointPolicy, generate_resumable
    from mimic.runtime.pipeline import generate

    seen, controls = [], []

    class Watch:
        def on_step_end(self, step, num_steps, latents):
            manifest = json.loads((tmp_path / "out.mp4.checkpoint" / "checkpoint.json").read_text())
            seen.append((step, manifest["step"]))

    def render(*args, control=None, **kwargs):
        controls.append(control)
        return generate(*args, control=control, **kwargs)

    with one_torch_thread():
        report = generate_resumable(mm.components, mm.admit(_job(tmp_path, inputs)), CheckpointPolicy(every=1), hooks=Watch(),
                                    control=JobControl(synchronize=True), render=render)
    assert report.frames == 6 and seen == [(1, 1), (2, 2)]
    assert controls[0].deterministic and controls[0].synchronize
    assert not (tmp_path / "out.mp4.checkpoint").exists()


def test_the_executors_gate_joins_the_callers_control(mm, inputs, tmp_path):
    """``JobExecutor.render``: the caller's turn runs inside the executor's lock, its poll runs."""
    from mimic.runtime.executor import JobExecutor

    executor = JobExecutor(mm)
    log = []

    @contextlib.contextmanager
    def turn():
        log.append(("turn", executor._denoise_lock.locked()))
        yield

    class Cancelled(Exception):
        pass

    def poll():
        log.append("poll")
        if log.count("poll") == 3:
            raise Cancelled()

    with one_torch_thread():
        with pytest.raises(Cancelled):
            executor.render(_job(tmp_path, inputs), hooks=[_Log("a", log)], control=JobControl(turns=(turn,), polls=(poll,)))
    assert log[:2] == [("a", "stage", "inputs"), ("a", "stage", "encode")]
    assert log[2:] == [("turn", True), "poll", "poll", ("a", "step", 1), "poll"]  # two windows a step; the third poll stops it
    assert not executor._denoise_lock.locked() and not (tmp_path / "out.mp4").exists()


def test_the_executors_turns_are_a_control_piece_that_cancels():
    from mimic.runtime.executor import JobCancelled, _Turns

    turns = _Turns()
    first, second = turns.control(0), turns.control(1)
    with first.denoise_turn():
        first.poll()
    with second.denoise_turn():  # job 0 done: job 1's turn
        pass
    turns.cancel()
    with pytest.raises(JobCancelled):
        second.poll()
    with pytest.raises(JobCancelled):
        with turns.control(2).denoise_turn():
            pass


def test_the_executors_run_gives_each_job_its_observers(mm, inputs, tmp_path):
    from mimic.runtime.executor import JobExecutor

    stages = {0: [], 1: []}

    class Stages:
        def __init__(self, k):
            self.k = k

        def on_stage_end(self, name, seconds):
            stages[self.k].append(name)

    jobs = [_job(tmp_path, inputs, "a.mp4"), _job(tmp_path, inputs, "b.mp4")]
    with one_torch_thread():
        reports = JobExecutor(mm, overlap=True).run(jobs, hooks_for=lambda k, job: Stages(k), raise_errors=True)
    assert [r.frames for r in reports] == [6, 6]
    assert stages == {k: ["inputs", "encode", "denoise", "decode_write"] for k in (0, 1)}
