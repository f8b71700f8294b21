"""The farm's scheduler and retry policy (``mimic.farm.schedule``) driven by fake workers, without
Ray: a lost worker's job resumes on another, bad input and NaN are final, retries run out with the
last error, ``jobs_per_worker`` bounds each worker, cancelling cancels the queue, results keep
submission order; and the progress view reads the scheduler's snapshot."""
from __future__ import annotations

import collections
from pathlib import Path

import pytest

from mimic.errors import ExitCode
from mimic.farm.outcome import JobProgress, WorkerOutcome
from mimic.farm.schedule import Scheduler
from mimic.farm.view import status_line

LOST = "lost"


def ended(a, outcome="done", **fields) -> WorkerOutcome:
    """What worker ``a.worker`` answers for assignment ``a``."""
    return WorkerOutcome(a.index, a.attempt, outcome, a.worker_name, pid=100 + a.worker, seconds=1.0, **fields)


class FakeFarm:
    """Stands in for ``Farm`` and its Ray actors: starts what the scheduler assigns and ends the
    attempts oldest first, each as ``behave(assignment)`` says (a ``WorkerOutcome``, or ``LOST``:
    the worker died under it and stays down unless ``revive``). Records the most attempts each
    worker ran at once."""

    def __init__(self, scheduler: Scheduler, behave, revive: bool = False):
        self.s, self.behave, self.revive = scheduler, behave, revive
        self.running: collections.deque = collections.deque()
        self.peak = collections.Counter()
        self.finals = []

    def step(self) -> bool:
        self.running.extend(self.s.assign())
        load = collections.Counter(a.worker for a in self.running)
        for w, n in load.items():
            self.peak[w] = max(self.peak[w], n)
        if not self.running:
            return False
        a = self.running.popleft()
        answer = self.behave(a)
        if answer == LOST:
            self.s.worker_lost(a.worker)
            self.finals.append(self.s.attempt_lost(a.index, f"worker {a.worker_name} died (attempt {a.attempt})"))
            if self.revive:
                self.s.worker_up(a.worker)  # Ray replaced it at once
        else:
            self.finals.append(self.s.attempt_ended(answer))
        return True

    def run(self):
        while self.step():
            pass
        assert self.s.idle
        return self.s.results()


def scheduler(workers=2, jobs=3, up=None, **kw) -> Scheduler:
    s = Scheduler(workers, **kw)
    for w in range(workers) if up is None else up:
        s.worker_up(w)
    for k in range(jobs):
        s.add(f"job{k}", Path(f"/out/{k}.mp4"))
    return s


@pytest.mark.parametrize("revive", [False, True])
def test_a_job_whose_worker_died_resumes_on_another_worker(revive):
    s = scheduler(workers=2, jobs=1, retries=2)
    results = FakeFarm(s, lambda a: LOST if a.attempt == 1 else ended(a, frames=10, resumed_from_step=1), revive=revive).run()
    (r,) = results
    assert r.outcome == "done" and r.attempts == 2 and r.worker == "w1" and r.error is None and r.resumed_from_step == 1
    assert [(h.attempt, h.worker, h.outcome) for h in r.history] == [(1, "w0", "lost"), (2, "w1", "done")]
    assert r.history[0].error == "worker w0 died (attempt 1)" and r.history[1].pid == 101


def test_a_retry_goes_first_in_line_and_a_stale_answer_is_ignored():
    s = scheduler(workers=2, jobs=3, retries=2)
    first, second = s.assign()
    s.worker_lost(0)
    assert s.attempt_lost(first.index, "worker w0 died") is None  # queued again
    s.worker_up(0)
    s.attempt_ended(ended(second))
    assert [(a.index, a.worker, a.attempt) for a in s.assign()] == [(0, 1, 2), (2, 0, 1)]
    assert s.attempt_ended(ended(first)) is None  # attempt 1's worker is gone: its answer does not end attempt 2
    assert s.results()[0].outcome == "pending" and s.snapshot().running[1].index == 0


@pytest.mark.parametrize("code", [ExitCode.BAD_INPUT, ExitCode.NUMERICS, ExitCode.INTERNAL, ExitCode.WEIGHTS])
def test_bad_input_numerics_and_bugs_are_final(code):
    s = scheduler(workers=2, jobs=2, retries=2)
    results = FakeFarm(s, lambda a: ended(a, "failed", error=f"bad {a.index}", exit_code=code) if a.index == 0 else ended(a)).run()
    bad, good = results
    assert (bad.outcome, bad.attempts, bad.exit_code, bad.error) == ("failed", 1, code, "bad 0")
    assert [h.outcome for h in bad.history] == ["failed"]
    assert good.outcome == "done" and good.attempts == 1  # the others go on


def test_out_of_memory_is_retried():
    s = scheduler(workers=2, jobs=1, retries=1)
    (r,) = FakeFarm(s, lambda a: ended(a, "failed", error="out of memory", exit_code=ExitCode.OUT_OF_MEMORY) if a.attempt == 1 else ended(a)).run()
    assert r.outcome == "done" and r.attempts == 2 and [h.outcome for h in r.history] == ["failed", "done"]


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_exhausted_fail_with_the_last_error(retries):
    s = scheduler(workers=2, jobs=1, retries=retries)
    (r,) = FakeFarm(s, lambda a: LOST, revive=True).run()
    assert r.outcome == "failed" and r.attempts == retries + 1 and r.exit_code == ExitCode.FAILED
    assert r.error == f"worker {r.worker} died (attempt {retries + 1})"
    assert [h.outcome for h in r.history] == ["lost"] * (retries + 1)

    s = scheduler(workers=1, jobs=1, retries=retries)
    (r,) = FakeFarm(s, lambda a: ended(a, "failed", error=f"oom {a.attempt}", exit_code=ExitCode.OUT_OF_MEMORY)).run()
    assert (r.outcome, r.attempts, r.exit_code, r.error) == ("failed", retries + 1, ExitCode.OUT_OF_MEMORY, f"oom {retries + 1}")


@pytest.mark.parametrize("per", [1, 2, 3])
def test_jobs_per_worker_bounds_each_worker(per):
    s = scheduler(workers=2, jobs=9, retries=0, jobs_per_worker=per)
    farm = FakeFarm(s, ended)
    first = s.assign()
    assert len(first) == 2 * per and collections.Counter(a.worker for a in first) == {0: per, 1: per}  # least-loaded first
    farm.running.extend(first)
    results = farm.run()
    assert dict(farm.peak) == {0: per, 1: per}
    assert all(r.outcome == "done" for r in results)


def test_only_up_workers_get_jobs():
    s = scheduler(workers=3, jobs=4, up=[1], retries=0)
    assert [a.worker for a in s.assign()] == [1]
    s.worker_broken(0)
    s.worker_up(2)
    assert [a.worker for a in s.assign()] == [2]


def test_cancel_cancels_the_queue_and_nothing_is_retried():
    s = scheduler(workers=2, jobs=5, retries=2)
    running = s.assign()
    assert [a.index for a in running] == [0, 1]
    cancelled = s.cancel()
    assert [r.index for r in cancelled] == [2, 3, 4] and {(r.outcome, r.attempts) for r in cancelled} == {("cancelled", 0)}
    assert s.assign() == []
    s.worker_lost(0)
    assert s.attempt_lost(0, "worker w0 died").outcome == "cancelled"  # not retried once cancelled
    assert s.cancel_running()[0].index == 1  # its worker never answered
    assert s.attempt_ended(ended(running[1])) is None  # a late answer changes nothing
    assert [r.outcome for r in s.results()] == ["cancelled"] * 5 and s.idle


def test_results_keep_submission_order_and_refused_entries_fail_at_once():
    s = Scheduler(2, retries=0)
    s.worker_up(0)
    s.worker_up(1)
    s.add("a", Path("/out/a.mp4"))
    refused = s.refuse(Path("/out/b.mp4"), "--ref /in/missing.png does not exist")
    s.add("c", Path("/out/c.mp4"))
    assert (refused.index, refused.outcome, refused.attempts, refused.exit_code, refused.job) == (1, "failed", 0, ExitCode.BAD_INPUT, None)
    a, c = s.assign()
    assert s.attempt_ended(ended(c, output="/out/c.mp4")).ok  # the later job ends first
    assert s.attempt_ended(ended(a, output="/out/a.mp4")).ok
    results = s.results()
    assert [(r.index, r.out.name, r.outcome) for r in results] == [(0, "a.mp4", "done"), (1, "b.mp4", "failed"), (2, "c.mp4", "done")]
    row = results[1].to_dict()
    assert (row["index"], row["out"], row["reference"], row["exit_code"]) == (2, "/out/b.mp4", None, 2)


def test_with_no_worker_left_the_queued_jobs_fail():
    now = [0.0]
    s = scheduler(workers=2, jobs=2, up=[], no_worker_timeout_s=60, clock=lambda: now[0])
    assert s.check_workers() == []
    now[0] = 61.0
    failed = s.check_workers()
    assert [r.error for r in failed] == ["no farm worker came back within 60 s"] * 2 and s.idle

    s = scheduler(workers=2, jobs=1, up=[])
    s.worker_broken(0)
    assert s.check_workers() == []
    s.worker_broken(1)
    assert [(r.outcome, r.error) for r in s.check_workers()] == [("failed", "no farm worker could load")]


def test_snapshot_counts_and_progress_for_the_view():
    now = [0.0]
    s = scheduler(workers=2, jobs=4, retries=0, clock=lambda: now[0])
    a, b = s.assign()
    now[0] = 4.0
    s.attempt_ended(WorkerOutcome(a.index, a.attempt, "done", a.worker_name, seconds=8.0))  # the worker's own seconds
    s.attempt_ended(ended(b, "failed", error="bad", exit_code=ExitCode.BAD_INPUT))
    (c, _) = s.assign()
    s.progress(c.index, JobProgress(stage="denoise", done=3, total=8, step=2, steps=4))
    snap = s.snapshot()
    assert (snap.total, snap.done, snap.failed, snap.cancelled, snap.queued, snap.workers) == (4, 1, 1, 0, 0, 2)
    assert snap.mean_job_seconds == 8.0 and snap.eta_basis == "done" and snap.elapsed == 4.0
    assert snap.eta_s == 8.0 and snap.eta_text == "ETA 8 s"  # 2 jobs left, 2 workers
    assert [(r.worker, r.index, r.out) for r in snap.running] == [("w0", 2, "2.mp4"), ("w1", 3, "3.mp4")]
    line = status_line(snap)
    assert line.startswith("farm: 1/4 done, 1 failed, 2 running, 0 queued | 4 s, ETA 8 s")  # the view's ETA is the snapshot's
    assert "w0 2.mp4 step 2/4 window 1/2" in line and "w1 3.mp4 inputs" in line


def test_an_eta_before_the_first_job_ends_is_projected_from_denoising_progress():
    now = [0.0]
    s = scheduler(workers=2, jobs=4, clock=lambda: now[0])
    a, b = s.assign()
    now[0] = 6.0
    snap = s.snapshot()  # nothing denoised yet: nothing to go by, and the line says when there will be
    assert snap.mean_job_seconds is None and snap.eta_s is None and snap.eta_text == "ETA once a job is denoising"
    assert "| 6 s, ETA once a job is denoising | w0 0.mp4 inputs" in status_line(snap)
    now[0] = 10.0
    s.progress(a.index, JobProgress(stage="denoise", done=5, total=20, step=2, steps=4))  # 10 s for a quarter of the calls
    s.progress(b.index, JobProgress(stage="encode"))
    snap = s.snapshot()
    assert snap.mean_job_seconds == 40.0 and snap.eta_basis == "progress"
    assert snap.eta_s == 80.0 and snap.eta_text == "ETA ~80 s (projected from denoising progress)"  # 4 jobs x 40 s / 2 workers
    assert "ETA ~80 s (projected from denoising progress)" in status_line(snap)
    now[0] = 30.0
    s.attempt_ended(WorkerOutcome(a.index, a.attempt, "done", a.worker_name, seconds=30.0))
    snap = s.snapshot()  # from here on: the done jobs
    assert (snap.mean_job_seconds, snap.eta_basis, snap.eta_s, snap.eta_text) == (30.0, "done", 45.0, "ETA 45 s")


def test_job_seconds_and_elapsed_leave_out_the_start_up_and_the_queue():
    """Jobs queued while the cluster and the workers start (30 s here) count from the first worker up,
    and the ETA uses what a job takes on its worker, not its time in the queue."""
    now = [0.0]
    s = Scheduler(1, clock=lambda: now[0])
    for k in range(3):
        s.add(f"job{k}", Path(f"/out/{k}.mp4"))
    now[0] = 30.0
    s.worker_up(0)
    for t in (40.0, 50.0):
        (a,) = s.assign()
        now[0] = t
        s.attempt_ended(WorkerOutcome(a.index, a.attempt, "done", a.worker_name, seconds=10.0))
    snap = s.snapshot()
    assert snap.elapsed == 20.0 and snap.mean_job_seconds == 10.0 and snap.eta_s == 10.0
    assert [r.seconds for r in s.results()[:2]] == [10.0, 20.0]  # the second job waited 10 s for the first


def test_the_summary_accounts_for_the_whole_wall_time():
    from mimic.farm.results import FarmReport, time_summary

    assert time_summary(146.0, [("cluster", 45.0), ("rendering", 101.0)]) == "146.0 s: 45.0 s Ray cluster start-up, 101.0 s rendering"
    # what the phases leave out is shown, so the parts always add up; tiny phases fold into it
    assert time_summary(150.0, [("sizing", 0.01), ("cluster", 45.0), ("rendering", 101.0)]) == \
        "150.0 s: 45.0 s Ray cluster start-up, 101.0 s rendering, 4.0 s other"
    report = FarmReport((), 101.0, (), phases=(("cluster", 45.0), ("workers", 12.0), ("rendering", 101.0)), wall_seconds=158.5)
    line = report.summary(before=[("preparing", 1.5)], more=[("shutdown", 2.0)])
    assert line == ("0 done, 0 failed in 162.0 s: 1.5 s preparing (jobs file, weights, screening), 45.0 s Ray cluster start-up, "
                    "12.0 s worker start-up (loading the weights), 101.0 s rendering, 2.0 s shutdown, 0.5 s other")
    d = report.to_dict()
    assert d["phases"] == {"cluster": 45.0, "workers": 12.0, "rendering": 101.0} and d["wall_seconds"] == 158.5 and d["seconds"] == 101.0
