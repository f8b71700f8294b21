"""A small progress line (steps x windows) with rate and ETA, on stderr."""
from __future__ import annotations

import sys
import time


class ProgressLine:
    def __init__(self, label: str, stream=None, min_interval_s: float = 0.5):
        self.label, self.stream, self.min_interval = label, stream, min_interval_s
        self.t0 = time.perf_counter()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < self.min_interval:
            return
        self._last = now
        elapsed = now - self.t0
        eta = elapsed / done * (total - done) if done else float("nan")
        end = "\n" if done >= total else ""
        stream = self.stream or sys.stderr  # resolved late: stderr may be redirected after creation
        stream.write(f"\r{self.label} {done}/{total} windows x steps  {elapsed:6.1f} s elapsed  ETA {eta:6.1f} s{end}")
        stream.flush()
