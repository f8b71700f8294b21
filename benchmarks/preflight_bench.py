"""Memory preflight calibration: the estimate (``runtime/memory.py``) against the measured peak RSS
of real ``mimic run`` processes on the tiny preset, over resolutions x in-process CPU workers
(``--device cpu,cpu,...``).

Each cell is one fresh process (peak RSS from ``wait4``, the number ``/usr/bin/time -f %M`` prints)
on a synthetic dancer clip, ``--steps 1 --window 16 --overlap 6 --sample-stride 1``: an 80-frame clip
has 8 windows and 10 decode chunks, so each of 4 workers runs every stage at least twice (a stage's
second run is when onnxruntime adds its planned block beside the first run's arena: the peak of any
job of 2 or more steps; one run each holds about half). A cell whose estimate
does not fit the memory available now is not run: ``preflight`` refuses it and the row says so.
Rows are written to ``--out`` as they finish (a JSON document, valid after every row). Usage:

    python -m mimic.benchmarks.preflight_bench --out results.json [--resolution 192 --workers 1 ...]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESOLUTIONS = (128, 192, 256, 320)
WORKERS = (1, 2, 4)
SETTINGS = ["--steps", "1", "--window", "16", "--overlap", "6", "--sample-stride", "1"]


def make_clip(folder: Path, frames: int) -> tuple[Path, Path]:
    """A reference image and a driving video of the synthetic dancer (the tests' inputs)."""
    import cv2
    import numpy as np

    from mimic.media.video_writer import write_rgb_video
    from mimic.pose.draw import draw_pose
    from mimic.runtime.demo_assets import synthetic_poses, synthetic_reference

    folder.mkdir(parents=True, exist_ok=True)
    ref = folder / "ref.png"
    cv2.imwrite(str(ref), synthetic_reference(400, 224)[:, :, ::-1])
    drawn = [np.maximum(draw_pose(p, 320, 192).transpose(1, 2, 0), 30).astype(np.uint8) for p in synthetic_poses(frames, (320, 192))]
    return ref, write_rgb_video(folder / "drive.mp4", drawn, 24.0)


def run_args(ref: Path, video: Path, out: Path, resolution: int, workers: int) -> list[str]:
    return ["run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), "--out", str(out), *SETTINGS,
            "--resolution", str(resolution), "--device", ",".join(["cpu"] * workers)]


def measure_peak(argv: list[str]) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of ``mimic <argv>`` in a fresh process; CalledProcessError on failure."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "from mimic.cli import main; main()", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv, stderr=stderr.decode(errors="replace"))
    return usage.ru_maxrss * 1024, time.perf_counter() - t0  # ru_maxrss: KiB on Linux


def estimate(resolution: int, workers: int, available: int | None = None):
    """The preflight's estimate for one cell (InputError where it would refuse it with ``available``)."""
    from mimic.model.config import GenerationConfig
    from mimic.model.tiny import ensure_tiny_weights
    from mimic.runtime.memory import GB, preflight

    config = GenerationConfig(resolution=resolution, window=16, overlap=6, steps=1, sample_stride=1)
    return preflight(ensure_tiny_weights(), config, "onnxruntime", "cpu", True, available=64 * GB if available is None else available,
                     workers=workers)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON file, rewritten after every row")
    ap.add_argument("--resolution", type=int, action="append", help=f"repeat (default {' '.join(map(str, RESOLUTIONS))})")
    ap.add_argument("--workers", type=int, action="append", help=f"repeat (default {' '.join(map(str, WORKERS))})")
    ap.add_argument("--frames", type=int, default=80, help="driving clip length (2 windows and 2 decode chunks per worker of 4)")
    args = ap.parse_args(argv)
    from mimic.benchmarks.env import describe, fingerprint
    from mimic.errors import InputError
    from mimic.runtime.memory import GB, available_host_bytes

    doc = {"machine": describe(fingerprint()), "date": _dt.date.today().isoformat(), "command": " ".join(["python -m mimic.benchmarks.preflight_bench", *(argv or sys.argv[1:])]),
           "cell_command": "mimic " + " ".join(run_args(Path("ref.png"), Path("drive.mp4"), Path("o.mp4"), 0, 1)).replace("--resolution 0 --device cpu", "--resolution R --device cpu[,cpu...]"),
           "frames": args.frames, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        ref, video = make_clip(Path(tmp), args.frames)
        for resolution in args.resolution or RESOLUTIONS:
            for workers in args.workers or WORKERS:
                row = {"resolution": resolution, "workers": workers, "estimate_bytes": estimate(resolution, workers).peak_bytes}
                try:
                    estimate(resolution, workers, available_host_bytes())
                    row["measured_bytes"], row["seconds"] = measure_peak(run_args(ref, video, Path(tmp) / "o.mp4", resolution, workers))
                    row["ratio"] = round(row["estimate_bytes"] / row["measured_bytes"], 3)
                    line = f"measured {row['measured_bytes'] / GB:6.2f} GB  estimate / measured {row['ratio']:.3f}  ({row['seconds']:.0f} s)"
                except InputError as err:
                    row["refused"] = str(err)
                    line = "refused: " + str(err)
                print(f"{resolution:4d} px  {workers} worker(s)  estimate {row['estimate_bytes'] / GB:6.2f} GB  {line}", flush=True)
                doc["rows"].append(row)
                args.out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
