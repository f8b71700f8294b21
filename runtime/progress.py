"""Progress of a job's denoising (windows x steps) with rate and ETA, on stderr.

On a terminal it is a tqdm bar; otherwise (a log file, a render farm's job log) a plain line per
update, at most every ``min_interval_s`` seconds and always at the end, so logs stay readable.
"""
from __future__ import annotations

import sys
import time

from mimic.runtime.pipeline import Hooks


class ProgressHooks(Hooks):
    def __init__(self, label: str, stream=None, min_interval_s: float = 5.0, tty: bool | None = None):
        self.label, self._stream, self.min_interval = label, stream, min_interval_s
        self._tty = tty
        self._bar = None
        self.t0 = time.perf_counter()
        self._last = float("-inf")

    @property
    def stream(self):
        return self._stream or sys.stderr  # resolved late: stderr may be redirected after creation

    def on_progress(self, done: int, total: int) -> None:
        tty = self._tty if self._tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        if tty:
            self._tqdm(done, total)
            return
        now = time.perf_counter()
        if done < total and now - self._last < self.min_interval:
            return
        self._last = now
        elapsed = now - self.t0
        eta = elapsed / done * (total - done) if done else float("nan")
        self.stream.write(f"{self.label} {done}/{total} windows x steps  {elapsed:.1f} s elapsed  ETA {eta:.1f} s\n")
        self.stream.flush()

    def _tqdm(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.label, unit="call", file=self.stream, leave=True, dynamic_ncols=True)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self._bar.close()
