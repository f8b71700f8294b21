"""What a studio throws at `mimic run`: every bad input is one exact line on stderr and a non-zero
exit before any model loads, nothing is created or overwritten; faults (disk full, SIGTERM, a failing
job in a batch) end cleanly with no debris and earlier outputs intact."""
from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from _runtime_helpers import SMALL_ARGS, make_inputs, run_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"), frames=6)


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` (no pixel data): decoders see the size first."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return _write(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _pose_frames_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path / "p0001.png"), np.zeros((64, 64, 3), np.uint8))
    return path


# (name, args(t, ref, video) -> argv tail, exact stderr line (str.format with t, r, v) or a regex)
BAD = [
    ("missing image", lambda t, r, v: ["--ref", f"{t}/nope.png", "--driving", v, "--out", f"{t}/o.mp4"], "error: --ref {t}/nope.png does not exist"),
    ("folder as --ref", lambda t, r, v: ["--ref", t, "--driving", v, "--out", f"{t}/o.mp4"], "error: --ref {t} is a folder, not an image file"),
    ("corrupt image", lambda t, r, v: ["--ref", _write(Path(t) / "bad.png", b"\x89PNG garbage"), "--driving", v, "--out", f"{t}/o.mp4"],
     "error: cannot read --ref {t}/bad.png: cannot identify image file '{t}/bad.png'"),
    ("truncated image", lambda t, r, v: ["--ref", _write(Path(t) / "trunc.png", Path(r).read_bytes()[:2000]), "--driving", v, "--out", f"{t}/o.mp4"],
     "error: cannot read --ref {t}/trunc.png: image file is truncated"),
    ("huge image", lambda t, r, v: ["--ref", _png_header_only(Path(t) / "huge.png", 15000, 15000), "--driving", v, "--out", f"{t}/o.mp4"],
     re.compile(r"error: --ref .*/huge\.png is too large to decode safely \(Image size \(225000000 pixels\) exceeds limit .*\)")),
    ("corrupt video", lambda t, r, v: ["--ref", r, "--driving", _write(Path(t) / "bad.mp4", b"\x00\x00\x00\x18ftypmp42 garbage"), "--out", f"{t}/o.mp4"],
     "error: cannot read video {t}/bad.mp4: Invalid data found when processing input"),
    ("image as driving video", lambda t, r, v: ["--ref", r, "--driving", r, "--out", f"{t}/o.mp4"],
     "error: --driving {r} is an image, not a video: give a video (or --pose-frames for drawn pose images)"),
    ("folder as --driving", lambda t, r, v: ["--ref", r, "--driving", t, "--out", f"{t}/o.mp4"], "error: --driving {t} is a folder, not a file"),
    ("output under a file", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{_write(Path(t) / 'file', b'x')}/sub/o.mp4"],
     "error: --out {t}/file/sub/o.mp4: {t}/file is a file, not a folder"),
    ("output name too long", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/{'a' * 250}.mp4"],
     re.compile(r"error: --out .*/a{250}\.mp4: the file name is too long \(2\d\d bytes with the temporary suffix; this file system allows 255\)")),
    ("bad output suffix", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.txt"], "error: --out {t}/o.txt: use an .mp4/.mov/.mkv file or a folder (numbered PNGs)"),
    ("output is the driving video", lambda t, r, v: ["--ref", r, "--driving", v, "--out", v], "error: --out {v} is the job's --driving input: choose another output"),
    ("PNG output into the pose-frames folder", lambda t, r, v: ["--ref", r, "--pose-frames", _pose_frames_dir(Path(t) / "pf"), "--out", f"{t}/pf/"],
     "error: --out {t}/pf is the job's --pose-frames input: choose another output"),
    ("PNG output into a folder of other files", lambda t, r, v: ["--ref", r, "--driving", v, "--out", str(_write(Path(t) / "mine" / "notes.txt", "keep").parent)],
     "error: --out {t}/mine holds other files (notes.txt): PNG frames go to a new or frames-only folder"),
    ("audio with PNG output", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/frames", "--audio"],
     "error: --audio needs a video output, but --out {t}/frames is a folder of PNG frames"),
    ("fps inf", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--fps", "inf"], "error: --fps must be a number, got inf"),
    ("fps tiny", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--fps", "0.0001"], "error: --fps must be in 1..240, got 0.0001"),
    ("negative resolution", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--resolution", "-5"], "error: --resolution must be in 64..4096, got -5"),
    ("huge resolution", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--resolution", "100000"], "error: --resolution must be in 64..4096, got 100000"),
    ("overlap >= window", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--overlap", "6"], "error: --overlap must be smaller than --window (6), got 6"),
    ("jobs file: steps two", lambda t, r, v: ["--jobs", _write(Path(t) / "jobs.yaml", f"- {{reference: {r}, driving: {v}, out: o.mp4, steps: two}}\n")],
     "error: {t}/jobs.yaml: job 1: --steps must be an integer, got 'two'"),
    ("config: num_inference_steps string", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--config", _write(Path(t) / "c.yaml", 'num_inference_steps: "1"\n')],
     "error: {t}/c.yaml: num_inference_steps: --steps must be an integer, got '1'"),
    ("config: guidance_scale word", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--config", _write(Path(t) / "c.yaml", "guidance_scale: high\n")],
     "error: {t}/c.yaml: guidance_scale: --guidance must be a number, got 'high'"),
    ("config: resolution word", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--config", _write(Path(t) / "c.yaml", "resolution: abc\n")],
     "error: {t}/c.yaml: resolution: --resolution must be an integer, got 'abc'"),
    ("config: seed 1e23", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--config", _write(Path(t) / "c.yaml", "seed: 1.0e+23\n")],
     "error: {t}/c.yaml: seed: --seed must be an integer, got 1e+23"),
    ("zero-frame video", lambda t, r, v: ["--ref", r, "--driving", _write(Path(t) / "empty.mp4", b""), "--out", f"{t}/o.mp4"],
     "error: cannot read video {t}/empty.mp4: Invalid data found when processing input"),
    ("flag seed 1e23", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--seed", "1e23"],
     "error: Invalid value for '--seed': Input should be a valid integer, unable to parse string as an integer (see `mimic run --help`)"),
    ("flag typo", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--sed", "3"],
     "error: No such option: --sed (Possible options: --seed, --speed, --svd) (see `mimic run --help`)"),
    ("unknown preset", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--preset", "huge"], "error: unknown preset 'huge'; known presets: tiny, toy"),
    ("tensorrt without engines", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--backend", "tensorrt"],
     "error: --backend tensorrt needs --engines DIR (from `mimic build-engines`)"),
    ("unknown backend", lambda t, r, v: ["--ref", r, "--driving", v, "--out", f"{t}/o.mp4", "--backend", "magic"], "error: unknown backend 'magic'; choose one of torch, onnxruntime, tensorrt"),
    ("two sources", lambda t, r, v: ["--ref", r, "--driving", v, "--pose-frames", v, "--out", f"{t}/o.mp4"],
     "error: job for {r}: give exactly one of driving video, pose file or pose frames (got 2)"),
]


@pytest.mark.parametrize("name,args,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_exact_line(name, args, expected, tiny_cache, tmp_path, inputs, capsys):
    ref, video = inputs
    t = str(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = ["run", "--preset", "tiny", *SMALL_ARGS, *map(str, args(t, str(ref), str(video)))]
    if "--preset" in argv[3:]:
        argv = argv[:1] + argv[3:]
    code, stdout, stderr = run_cli(argv, capsys)
    assert code == 2, (stdout, stderr)
    line = stderr.rstrip("\n")
    if isinstance(expected, re.Pattern):
        assert expected.fullmatch(line), line
    else:
        assert line == expected.format(t=t, r=ref, v=video)
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    created = sorted(p.name for p in tmp_path.iterdir())
    assert not (set(created) - set(before)) - {"bad.png", "trunc.png", "huge.png", "bad.mp4", "empty.mp4", "file", "pf", "mine", "jobs.yaml", "c.yaml"}
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "frames").exists()


def _run(capsys, *argv):
    return run_cli(["run", "--preset", "tiny", *SMALL_ARGS, *map(str, argv)], capsys)


def test_png_folder_output_replaces_stale_frames_whole(tiny_cache, tmp_path, inputs, capsys):
    ref, video = inputs
    out = tmp_path / "frames"
    out.mkdir()
    for i in range(1, 21):
        cv2.imwrite(str(out / f"frame_{i:06d}.png"), np.zeros((8, 8, 3), np.uint8))
    code, stdout, stderr = _run(capsys, "--ref", ref, "--driving", video, "--out", out)
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:06d}.png" for i in range(1, 7)] + ["report.json"]
    assert json.loads((out / "report.json").read_text())["frames"] == 6
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folders left


def test_a_batch_keeps_going_past_bad_and_failing_jobs(tiny_cache, tmp_path, inputs, capsys, monkeypatch):
    """Job 2 has a missing input (refused before loading), job 3 hits an unexpected error while
    rendering: jobs 1 and 4 still render; errors go to stderr with index and output; exit 1."""
    ref, video = inputs
    jobs = _write(tmp_path / "jobs.yaml", "\n".join(f"- {{reference: {r}, driving: {video}, out: o{k}.mp4}}" for k, r in enumerate([ref, tmp_path / "gone.png", ref, ref], 1)) + "\n")
    import mimic.runtime.executor as executor

    real = executor.generate

    def flaky(components, job, **kw):
        if job.out.name == "o3.mp4":
            raise MemoryError("simulated allocation failure")
        return real(components, job, **kw)

    monkeypatch.setattr(executor, "generate", flaky)
    code, stdout, stderr = _run(capsys, "--jobs", jobs, "--sequential")
    assert code == 1
    assert (tmp_path / "o1.mp4").is_file() and (tmp_path / "o4.mp4").is_file()
    assert not (tmp_path / "o2.mp4").exists() and not (tmp_path / "o3.mp4").exists()
    assert f"error: job 2 ({tmp_path}/o2.mp4): --ref {tmp_path}/gone.png does not exist" in stderr
    assert f"error: job 3 ({tmp_path}/o3.mp4): internal error (please report this with the traceback):" in stderr
    assert "MemoryError: simulated allocation failure" in stderr  # the bug keeps its traceback
    assert stderr.rstrip().endswith("2 done, 2 failed")
    assert "error:" not in stdout


def test_same_video_in_two_upstream_test_cases_names_the_output(tiny_cache, tmp_path, inputs, capsys):
    ref, video = inputs
    cfg = _write(tmp_path / "test.yaml", f"test_case:\n  - {{ref_video_path: {video}, ref_image_path: {ref}}}\n  - {{ref_video_path: {video}, ref_image_path: {ref}}}\n")
    code, stdout, stderr = run_cli(["run", "--preset", "tiny", *SMALL_ARGS, "--config", str(cfg)], capsys)
    assert code == 1
    assert f"error: job 1 ({tmp_path}/outputs/{Path(video).stem}.mp4): --out {tmp_path}/outputs/{Path(video).stem}.mp4: another job writes the same output" in stderr


def test_mkv_output_is_matroska(tiny_cache, tmp_path, inputs, capsys):
    ref, video = inputs
    code, _, stderr = _run(capsys, "--ref", ref, "--driving", video, "--out", tmp_path / "o.mkv")
    assert code == 0, stderr
    assert (tmp_path / "o.mkv").read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML magic, not an MP4 ftyp box


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    from mimic.media.images import read_image

    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))  # landscape pixels...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...shown rotated 90 degrees (a phone portrait)
    img.save(tmp_path / "p.jpg", exif=exif)
    assert read_image(tmp_path / "p.jpg").shape == (40, 20, 3)


def test_temporary_names_are_per_process():
    from mimic.files import temp_path

    assert temp_path(Path("/x/prev.mp4")) == Path(f"/x/.prev.{os.getpid()}.part.mp4")


def _cli(*argv, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "mimic.cli", *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **kw)


@pytest.mark.slow  # 27 s
def test_disk_full_ends_in_one_line_and_keeps_the_previous_output(tiny_cache, tmp_path, inputs):
    """A file-size limit (RLIMIT_FSIZE) makes every write past 4 KB fail like a full disk."""
    import resource

    ref, video = inputs
    out = tmp_path / "o.mp4"
    first = _cli("run", "--preset", "tiny", *SMALL_ARGS, "--ref", ref, "--driving", video, "--out", out)
    assert first.wait(timeout=240) == 0, first.stderr.read().decode()
    previous = out.read_bytes()

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = _cli("run", "--preset", "tiny", *SMALL_ARGS, "--ref", ref, "--driving", video, "--out", out, "--seed", "7", preexec_fn=limit)
    assert proc.wait(timeout=240) == 2
    stderr = proc.stderr.read().decode()
    assert stderr.splitlines()[-1] == f"error: cannot write video {out}: File too large", stderr  # after the progress lines
    assert "Traceback" not in stderr
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4", "o.mp4.report.json"]


def test_sigterm_cleans_up_and_says_so(tiny_cache, tmp_path, inputs):
    ref, video = inputs
    out = tmp_path / "frames"
    proc = _cli("run", "--preset", "tiny", "--steps", "200", "--window", "6", "--overlap", "2", "--resolution", "128", "--sample-stride", "1",
                "--ref", ref, "--driving", video, "--out", out)
    for line in proc.stdout:  # wait until the models are loaded and it is denoising
        if b"loaded in" in line:
            break
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    stderr = proc.stderr.read().decode()
    assert stderr.splitlines()[-1] == "interrupted (SIGTERM): temporary files removed, earlier outputs left as they were"
    assert "Traceback" not in stderr
    # nothing but the job's resume checkpoint (kept on purpose: the next run continues from it)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".checkpoint")] == []


def test_memory_preflight_refuses_what_cannot_fit(tiny_cache, tiny_layout):
    from mimic.errors import InputError
    from mimic.model.config import GenerationConfig
    from mimic.runtime.memory import GB, preflight

    cfg = GenerationConfig(resolution=384, window=4, overlap=1, steps=1)
    est = preflight(tiny_layout, cfg, "onnxruntime", "cpu", True, available=64 * GB)
    assert 7.0 * GB < est.peak_bytes < 7.5 * GB  # measured peak: 7.00 GB with two decode chunks (benchmarks/RESULTS.md)
    with pytest.raises(InputError) as err:
        preflight(tiny_layout, cfg, "onnxruntime", "cpu", True, available=4 * GB)
    assert str(err.value) == (f"this job needs ~{est.peak_bytes / GB:.1f} GB of host memory, 4.0 GB available "
                              "(--resolution 384, --window 4, onnxruntime): lower --resolution, --window or --decode-chunk")


def test_a_job_too_big_for_this_machine_is_refused_before_loading(tiny_cache, tmp_path, inputs, capsys):
    ref, video = inputs
    code, stdout, stderr = run_cli(["run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), "--out", str(tmp_path / "o.mp4"),
                                    "--window", "4", "--overlap", "1", "--resolution", "1024"], capsys)
    assert code == 2
    assert re.fullmatch(r"error: this job needs ~\d+\.\d GB of host memory, \d+\.\d GB available \(--resolution 1024, --window 4, onnxruntime\): "
                        r"lower --resolution, --window or --decode-chunk\n", stderr), stderr
    assert "loading" not in stdout and list(tmp_path.iterdir()) == []


@pytest.mark.slow  # two renders at 256 and 384 px (~1 min, 6 GB)
@pytest.mark.parametrize("resolution", [256, 384])
def test_memory_estimate_is_within_25_percent_of_the_measured_peak(resolution, tiny_cache, tiny_layout, tmp_path, inputs):
    from mimic.model.config import GenerationConfig
    from mimic.model.weights import fetch_svd
    from mimic.runtime.memory import estimate_job_memory

    ref, video = inputs
    code = ("import resource, sys\nfrom mimic.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    out = subprocess.run([sys.executable, "-c", code, "run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), "--out", str(tmp_path / "o.mp4"),
                          "--steps", "1", "--window", "4", "--overlap", "1", "--resolution", str(resolution), "--sample-stride", "1"],
                         capture_output=True, text=True, timeout=600, check=True)
    peak = int(out.stdout.strip().splitlines()[-1])
    est = estimate_job_memory(tiny_layout, fetch_svd(tiny_layout.svd), GenerationConfig(resolution=resolution, window=4, overlap=1, steps=1), "onnxruntime", True)
    assert 0.8 < est.peak_bytes / peak < 1.25, (est.peak_bytes, peak)


def test_a_driving_clip_without_a_person_is_reported(tiny_cache, tmp_path, capsys):
    from _runtime_helpers import make_inputs as _make
    from mimic.media.video_writer import write_rgb_video

    ref, _ = _make(tmp_path / "in", frames=2)
    blank = write_rgb_video(tmp_path / "blank.mp4", [np.full((320, 192, 3), 90, np.uint8) for _ in range(6)], 24)
    code, stdout, stderr = _run(capsys, "--ref", ref, "--driving", blank, "--out", tmp_path / "o.mp4")
    assert code == 0, stderr
    assert "warning: 6 of 6 frames have no detected person box (DWPose used the whole frame)" in stderr.splitlines()  # a warning: stderr
    report = json.loads((tmp_path / "o.mp4.report.json").read_text())
    assert "6 of 6 frames have no detected person box (DWPose used the whole frame)" in report["warnings"]


def test_validate_does_not_skip_an_engine_without_a_manifest(tmp_path, capsys):
    (tmp_path / "unet.plan").write_bytes(b"\0" * 64)
    code, stdout, stderr = run_cli(["validate", "--engines", str(tmp_path), "--check-only"], capsys)
    assert code == 5
    assert stderr.startswith("error: ") and "an engine without a manifest (unet.plan)" in stderr and stderr.count("\n") == 1


def test_a_pose_file_with_a_zero_frame_size_is_refused(tiny_cache, tmp_path, inputs, capsys):
    ref, video = inputs
    good = tmp_path / "p.npz"
    code, _, stderr = run_cli(["pose", str(video), "-o", str(good), "--preset", "tiny"], capsys)
    assert code == 0, stderr
    data = dict(np.load(good))
    data["video_hw"] = np.array([0, 0], dtype=data["video_hw"].dtype)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **data)
    code, _, stderr = run_cli(["run", "--preset", "tiny", *SMALL_ARGS, "--ref", str(ref), "--pose", str(bad), "--out", str(tmp_path / "o.mp4")], capsys)
    assert code == 2 and stderr == f"error: {bad} is corrupt: its video size is 0x0\n"


def test_pose_preview_cannot_overwrite_its_video(tiny_cache, tmp_path, inputs, capsys):
    _, video = inputs
    code, _, stderr = run_cli(["pose", str(video), "-o", str(tmp_path / "p.npz"), "--preview", str(video), "--preset", "tiny"], capsys)
    assert code == 2 and stderr == f"error: --preview {video} is the input video: choose another output\n"
