"""Progress of a job's denoising (windows x steps) and decoding (frames) with rate and ETA, on stderr.

On a terminal it is a tqdm bar; otherwise (a log file, a render farm's job log) a plain line per
update, at most every ``min_interval_s`` seconds and always at the end, so logs stay readable.
Both reporters are observers (``pipeline.Hooks``): they watch a job, they never control it.
"""
from __future__ import annotations

import sys
import time

from mimic.logs import progress_line_open
from mimic.runtime.pipeline import Hooks


class ProgressHooks(Hooks):
    def __init__(self, label: str, stream=None, min_interval_s: float = 5.0, tty: bool | None = None):
        self.label, self._stream, self.min_interval = label, stream, min_interval_s
        self._tty = tty
        self._bar = None
        self.t0 = time.perf_counter()
        self._last = float("-inf")
        self._decode_t0: float | None = None

    @property
    def stream(self):
        return self._stream or sys.stderr  # resolved late: stderr may be redirected after creation

    def on_progress(self, done: int, total: int) -> None:
        tty = self._tty if self._tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        if tty:
            self._tqdm(done, total)
            return
        self._line(f"{done}/{total} windows x steps", done, total, self.t0)

    def _line(self, what: str, done: int, total: int, t0: float) -> None:
        """``LABEL WHAT  E s elapsed  ETA R s`` at most every ``min_interval_s``, and always at the end."""
        now = time.perf_counter()
        if done < total and now - self._last < self.min_interval:
            return
        self._last = now
        elapsed = now - t0
        eta = elapsed / done * (total - done) if done else float("nan")
        self.stream.write(f"{self.label} {what}  {elapsed:.1f} s elapsed  ETA {eta:.1f} s\n")
        self.stream.flush()

    def on_stage_end(self, name: str, seconds: float) -> None:
        if name == "denoise":  # decoding starts now: its elapsed time and ETA count from here
            self._decode_t0, self._last = time.perf_counter(), float("-inf")

    def on_decode(self, done: int, total: int) -> None:
        """Decoding and writing: a plain line per update (at most every ``min_interval_s``, always
        at the end), also on a terminal (the denoising bar is closed by then)."""
        if self._decode_t0 is None:  # no denoising seen (a resumed job's last step, a bare observer)
            self._decode_t0, self._last = time.perf_counter(), float("-inf")
        self._line(f"decoded {done}/{total} frames", done, total, self._decode_t0)

    def _tqdm(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.label, unit="call", file=self.stream, leave=True, dynamic_ncols=True)
        self._bar.update(done - self._bar.n)
        # the bar's line stays open until it closes: log lines and errors end it first (mimic.logs)
        progress_line_open(self._bar.fp, done < total)
        if done >= total:
            self._bar.close()


class OpenJDProgress:
    """Open Job Description's progress contract on stdout, for a whole run of ``num_jobs`` jobs:
    ``openjd_progress: <0-100>`` whenever the whole run's integer percentage grows, and
    ``openjd_status: <text>`` at each phase and denoising step (Deadline Cloud shows both).
    A job counts 10% for its inputs and encoding, 80% for denoising (windows x steps) and 10% for
    decoding and writing. ``hooks(k, job)`` gives job k's hooks (``JobExecutor.run(hooks_for=...)``).
    """

    STAGES = {"inputs": 0.05, "encode": 0.10, "denoise": 0.90, "decode_write": 1.0}

    def __init__(self, num_jobs: int, stream=None):
        import threading

        self.num_jobs = max(1, num_jobs)
        self._stream = stream
        self._lock = threading.Lock()
        self._fractions = [0.0] * self.num_jobs
        self._percent = -1

    @property
    def stream(self):
        return self._stream or sys.stdout

    def hooks(self, k: int, job) -> Hooks:
        from pathlib import Path

        return _OpenJDHooks(self, k, f"[{k + 1}/{self.num_jobs}] {Path(job.out).name}")

    def line(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def fail(self, message: str) -> None:
        self.line(f"openjd_fail: {message}")

    def update(self, k: int, fraction: float) -> None:
        with self._lock:
            self._fractions[k] = max(self._fractions[k], min(1.0, fraction))
            percent = int(100 * sum(self._fractions) / self.num_jobs)
            if percent <= self._percent:
                return
            self._percent = percent
            self.stream.write(f"openjd_progress: {percent}\n")
            self.stream.flush()


class _OpenJDHooks(Hooks):
    def __init__(self, run: OpenJDProgress, k: int, label: str):
        self.run, self.k, self.label = run, k, label
        self._calls = 0

    def on_stage_end(self, name: str, seconds: float) -> None:
        self.run.line(f"openjd_status: {self.label}: {name.replace('_', ' and ')} done in {seconds:.1f} s")
        if name in OpenJDProgress.STAGES:
            self.run.update(self.k, OpenJDProgress.STAGES[name])

    def on_progress(self, done: int, total: int) -> None:
        self.run.update(self.k, 0.10 + 0.80 * done / max(1, total))

    def on_decode(self, done: int, total: int) -> None:
        self.run.update(self.k, 0.90 + 0.10 * done / max(1, total))

    def on_step_end(self, step: int, num_steps: int, latents) -> None:
        self.run.line(f"openjd_status: {self.label}: denoising step {step}/{num_steps}")


def progress_hooks(mode: str, num_jobs: int):
    """``hooks_for(k, job)`` for ``mimic run --progress MODE``: ``auto`` (a bar on a terminal, plain
    lines otherwise, on stderr), ``openjd`` (Open Job Description lines on stdout) or ``none``.
    Returns (hooks_for, the OpenJDProgress or None)."""
    from pathlib import Path

    if mode == "auto":
        return (lambda k, job: ProgressHooks(f"[{k + 1}/{num_jobs}] {Path(job.out).name}")), None
    if mode == "openjd":
        run = OpenJDProgress(num_jobs)
        return run.hooks, run
    if mode == "none":
        return None, None
    from mimic.errors import InputError

    raise InputError(f"--progress must be auto, openjd or none, got {mode!r}")
