"""The farm's progress view: jobs done / failed / running, each worker's job at window x step, ETA.

On a terminal it is a tqdm bar over jobs whose description shows the workers; otherwise (a log
file, a scheduler's job log) a plain line every ``interval_s`` seconds and at the end. Events
(a job done, failed or retried, a worker replaced) are log lines of their own (``mimic.farm``).
"""
from __future__ import annotations

import sys
import time

from mimic.farm.schedule import FarmSnapshot, RunningJob


def describe_worker(run: RunningJob) -> str:
    """``w0 a.mp4 step 3/25 window 2/8`` (or the stage before denoising starts)."""
    text = f"{run.worker} {run.out}"
    p = run.progress
    if p.total and p.done:
        windows = max(1, p.total // p.steps) if p.steps else 0
        if windows:
            text += f" step {(p.done - 1) // windows + 1}/{p.steps} window {(p.done - 1) % windows + 1}/{windows}"
        else:
            text += f" {p.done}/{p.total} calls"
    elif p.stage:
        text += f" {p.stage}"
    if run.attempt > 1:
        text += f" (attempt {run.attempt})"
    return text


def finished(snap: FarmSnapshot) -> int:
    return snap.done + snap.failed + snap.cancelled


def status_line(snap: FarmSnapshot) -> str:
    eta = snap.eta_text  # the schedule's words: projected (~) before a job is done, "once a job is denoising" before that
    workers = "; ".join(describe_worker(r) for r in snap.running)
    line = (f"farm: {snap.done}/{snap.total} done, {snap.failed} failed, {len(snap.running)} running, {snap.queued} queued"
            f" | {snap.elapsed:.0f} s" + (f", {eta}" if eta else ""))
    return line + (f" | {workers}" if workers else "")


class FarmView:
    def __init__(self, stream=None, tty: bool | None = None, interval_s: float = 5.0):
        self._stream, self._tty, self.interval = stream, tty, interval_s
        self._bar = None
        self._last = float("-inf")

    @property
    def stream(self):
        return self._stream or sys.stderr

    @property
    def tty(self) -> bool:
        return self._tty if self._tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, snap: FarmSnapshot) -> None:
        if self.tty:
            from tqdm import tqdm

            if self._bar is None:
                self._bar = tqdm(total=snap.total, desc="farm", unit="job", file=self.stream, dynamic_ncols=True, leave=True)
            self._bar.total = snap.total
            self._bar.update(finished(snap) - self._bar.n)
            workers = "; ".join(describe_worker(r) for r in snap.running)
            self._bar.set_postfix_str(f"failed {snap.failed} running {len(snap.running)} | {workers}", refresh=True)
            return
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        self.stream.write(status_line(snap) + "\n")
        self.stream.flush()

    def close(self, snap: FarmSnapshot) -> None:
        if self._bar is not None:
            self._bar.update(finished(snap) - self._bar.n)
            self._bar.close()
            self._bar = None
        elif not self.tty:
            self.stream.write(status_line(snap) + "\n")
            self.stream.flush()
