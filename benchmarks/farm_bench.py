"""Farm and checkpoint costs, measured (``python -m mimic.benchmarks.farm_bench``):

1. **Checkpoint cost per step**: ``CheckpointStore.save`` (copy to host, write, fsync, rename, then
   the manifest) timed on latents of the tiny job and of full-size jobs (576x1024, fp16: one
   72-frame window, and the 35 s clip of the issue: 8 windows), on the folder given (``--dir``: put
   it on the storage a farm uses), median of ``--repeats``; and end to end, the same tiny job
   rendered with ``--checkpoint-every 1`` and ``0`` in one process (denoise seconds per step).
2. **Farm overhead per job**: the same N tiny jobs (PNG outputs) rendered, in one run, by
   ``mimic run --jobs --sequential`` and by ``mimic farm --jobs --workers 1`` (same compute: one
   worker) and ``--workers W``, each a fresh process, wall time; the farm's fixed cost (cluster
   start, worker load) and its per-job cost are split using the farm report; outputs are checked
   byte-identical.

Prints a Markdown summary and writes the JSON record (``--out``) with the machine fingerprint.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

# The real job's latent shapes: (1, F, 4, H/8, W/8) at 576x1024, fp16.
FULL_WINDOW = (1, 72, 4, 128, 72)
FULL_CLIP = (1, 8 * 66 + 6, 4, 128, 72)  # 8 windows of 72 frames, overlap 6 (a 35 s clip at 15 fps)


def time_saves(folder: Path, shape: tuple[int, ...], dtype, repeats: int) -> dict:
    import torch

    from mimic.runtime.checkpoint import CheckpointStore

    latents = torch.randn(shape).to(dtype)
    store = CheckpointStore(folder / f"bench-{'x'.join(map(str, shape))}.checkpoint", "bench", 42)
    seconds = []
    for step in range(1, repeats + 1):
        t0 = time.perf_counter()
        assert store.save(step, repeats, latents)
        seconds.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    step, loaded = store.load()
    load_s = time.perf_counter() - t0
    assert step == repeats and torch.equal(loaded, latents)
    store.remove()
    mb = latents.numel() * latents.element_size() / 1e6
    return {"shape": list(shape), "dtype": str(dtype), "mb": round(mb, 2), "save_median_s": statistics.median(seconds),
            "save_max_s": max(seconds), "load_s": load_s, "repeats": repeats}


def write_inputs(folder: Path, frames: int) -> tuple[Path, Path]:
    import cv2
    import numpy as np

    from mimic.media.video_writer import write_rgb_video
    from mimic.pose.draw import draw_pose
    from mimic.runtime.demo_assets import synthetic_poses, synthetic_reference

    folder.mkdir(parents=True, exist_ok=True)
    ref = folder / "ref.png"
    cv2.imwrite(str(ref), synthetic_reference(400, 224)[:, :, ::-1])
    hw = (320, 192)
    drawn = [np.maximum(draw_pose(p, *hw).transpose(1, 2, 0), 30).astype(np.uint8) for p in synthetic_poses(frames, hw)]
    video = folder / "drive.mp4"
    write_rgb_video(video, drawn, 24.0)
    return ref, video


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def _pngs(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("frame_*.png"))]


def jobs_file(folder: Path, ref: Path, video: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [{"reference": str(ref), "driving": str(video), "out": str(folder / f"job{k}"), "seed": k} for k in range(n)]
    path = folder / "jobs.json"
    path.write_text(json.dumps(jobs))
    return path


def main(argv: list[str] | None = None) -> dict:
    import torch

    from mimic.benchmarks.env import describe, fingerprint

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None, help="Folder for the renders and checkpoints (default: a temporary one).")
    ap.add_argument("--settings", default="--steps 4 --window 6 --overlap 2 --resolution 128 --sample-stride 1")
    ap.add_argument("--out", type=Path, default=Path("results-farm.json"))
    args = ap.parse_args(argv)
    started = datetime.now(timezone.utc)
    root = Path(args.dir or tempfile.mkdtemp(prefix="mimic-farm-bench-"))
    env = dict(os.environ)
    mimic = [sys.executable, "-m", "mimic.cli"]
    settings = shlex.split(args.settings)
    record: dict = {"started": started.isoformat(), "command": shlex.join(["python", "-m", "mimic.benchmarks.farm_bench", *(argv or sys.argv[1:])]),
                    "env": fingerprint(), "settings": args.settings}

    # 1. checkpoint cost
    ref, video = write_inputs(root / "inputs", 10)
    tiny_steps = int(settings[settings.index("--steps") + 1])
    saves = [time_saves(root, shape, dt, args.repeats) for shape, dt in
             (((1, 11, 4, 16, 16), torch.float32), (FULL_WINDOW, torch.float16), (FULL_CLIP, torch.float16))]
    e2e = {}
    for every in (0, 1):
        out = root / f"ckpt-every-{every}"
        _, stdout = timed([*mimic, "run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), "--out", str(out), "--progress", "none",
                           "--checkpoint-every", str(every), *settings], env)
        e2e[every] = json.loads((out / "report.json").read_text())["seconds"]["denoise"]
    record["checkpoint"] = {"saves": saves, "denoise_s": {"every_0": e2e[0], "every_1": e2e[1]}, "steps": tiny_steps,
                            "per_step_s": (e2e[1] - e2e[0]) / tiny_steps}

    # 2. farm overhead per job, same run
    seq_jobs = jobs_file(root / "sequential", ref, video, args.jobs)
    seq_wall, _ = timed([*mimic, "run", "--jobs", str(seq_jobs), "--sequential", "--preset", "tiny", "--progress", "none", *settings], env)
    seq_render = sum(json.loads((root / "sequential" / f"job{k}" / "report.json").read_text())["seconds"].get(s, 0.0)
                     for k in range(args.jobs) for s in ("inputs", "encode", "denoise", "decode_write"))
    farms = {}
    for workers in sorted({1, args.workers}):
        folder = root / f"farm-w{workers}"
        fj = jobs_file(folder, ref, video, args.jobs)
        wall, _ = timed([*mimic, "farm", "--jobs", str(fj), "--workers", str(workers), "--preset", "tiny", "--device", "cpu", "--progress", "none", *settings], env)
        report = json.loads((folder / "jobs.farm-report.json").read_text())
        identical = all(_pngs(folder / f"job{k}") == _pngs(root / "sequential" / f"job{k}") for k in range(args.jobs))
        farms[workers] = {"wall_s": wall, "farm_s": report["seconds"], "fixed_s": wall - report["seconds"],
                          "load_s": [w.get("load_seconds") for w in report["workers"]], "identical": identical,
                          "job_s": [r["seconds"] for r in report["results"]]}
    record["farm"] = {"jobs": args.jobs, "sequential_wall_s": seq_wall, "sequential_render_s": seq_render, "farms": farms,
                      "overhead_per_job_s": (farms[1]["wall_s"] - seq_wall) / args.jobs}
    record["finished"] = datetime.now(timezone.utc).isoformat()
    args.out.write_text(json.dumps(record, indent=2) + "\n")

    print(f"machine: {describe(record['env'])}; {record['started']} .. {record['finished']}")
    print(f"command: {record['command']}\n")
    print("| latents | MB | save (median) | save (max) | load |\n| --- | --- | --- | --- | --- |")
    for s in saves:
        print(f"| {'x'.join(map(str, s['shape']))} {s['dtype'].removeprefix('torch.')} | {s['mb']} | {s['save_median_s'] * 1e3:.1f} ms | {s['save_max_s'] * 1e3:.1f} ms | {s['load_s'] * 1e3:.1f} ms |")
    c = record["checkpoint"]
    print(f"\ntiny job denoise: {c['denoise_s']['every_0']:.2f} s without checkpoints, {c['denoise_s']['every_1']:.2f} s with one per step "
          f"({c['per_step_s'] * 1e3:+.0f} ms per step over {tiny_steps} steps)\n")
    f = record["farm"]
    print(f"{args.jobs} tiny jobs: sequential `mimic run --jobs` {f['sequential_wall_s']:.1f} s wall ({f['sequential_render_s']:.1f} s rendering)")
    for w, r in farms.items():
        print(f"  farm --workers {w}: {r['wall_s']:.1f} s wall = {r['fixed_s']:.1f} s cluster start + worker load + {r['farm_s']:.1f} s farming; identical: {r['identical']}")
    print(f"farm overhead per job (1 worker vs sequential): {f['overhead_per_job_s']:+.1f} s")
    return record


if __name__ == "__main__":
    main()
