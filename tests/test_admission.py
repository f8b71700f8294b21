"""Admission (``mimic.runtime.admission``): one check of a job, its inputs opened once and reused by
the render: the reference decoded once, the driving video probed once, the pose file loaded once."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from _runtime_helpers import make_inputs, one_torch_thread
from mimic.errors import InputError

SETTINGS = {"steps": 2, "window": 4, "overlap": 1, "resolution": 64, "sample_stride": 1}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"), frames=6)


@pytest.fixture(scope="module")
def mm(tiny_cache):
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="torch")) as mm:
        yield mm


@pytest.fixture(scope="module")
def pose_file(mm, inputs, tmp_path_factory):
    from mimic.pose.extract import extract_video_poses
    from mimic.pose.files import save_poses

    return save_poses(tmp_path_factory.mktemp("poses") / "poses.npz", extract_video_poses(mm.detector(), inputs[1], 1))


@pytest.fixture
def opens(monkeypatch):
    """Counts, by kind, every reference decode, video probe and pose-file load (at their import
    sites: the inputs module, and DWPose's extraction, which probes when not given the probe)."""
    from mimic.pose import extract
    from mimic.runtime import inputs as inputs_module

    counts: Counter = Counter()

    def counting(kind, fn):
        def wrapper(path, *args, **kwargs):
            counts[kind, Path(path).name] += 1
            return fn(path, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(inputs_module, "read_image", counting("decode", inputs_module.read_image))
    monkeypatch.setattr(inputs_module, "probe_video", counting("probe", inputs_module.probe_video))
    monkeypatch.setattr(inputs_module, "load_poses", counting("load", inputs_module.load_poses))
    monkeypatch.setattr(extract, "probe_video", counting("probe", extract.probe_video))
    return counts


def _job(tmp_path, ref, **source):
    from mimic.runtime.jobs import Job

    return Job(reference=ref, out=tmp_path / "out.mp4", overrides=dict(SETTINGS), **source)


def test_a_render_decodes_the_reference_once_and_probes_the_video_once(mm, inputs, opens, tmp_path):
    ref, video = inputs
    with one_torch_thread():
        report = mm.render(_job(tmp_path, ref, driving=video))
    assert report.frames == 6
    assert opens == {("decode", ref.name): 1, ("probe", video.name): 1}


def test_a_render_from_a_pose_file_loads_it_once(mm, inputs, pose_file, opens, tmp_path):
    ref, _ = inputs
    with one_torch_thread():
        report = mm.render(_job(tmp_path, ref, poses=pose_file))
    assert report.frames == 6
    assert opens == {("decode", ref.name): 1, ("load", pose_file.name): 1}


def test_the_executor_admits_plain_jobs_once_and_keeps_admitted_ones(mm, inputs, opens, tmp_path):
    from mimic.runtime.admission import admit
    from mimic.runtime.executor import JobExecutor
    from mimic.runtime.jobs import Job

    ref, video = inputs
    plain = Job(reference=ref, driving=video, out=tmp_path / "a.mp4", overrides=dict(SETTINGS))
    admitted = admit(Job(reference=ref, driving=video, out=tmp_path / "b.mp4", overrides=dict(SETTINGS)), mm.base_config)
    assert opens == {("decode", ref.name): 1, ("probe", video.name): 1}
    with one_torch_thread():
        reports = JobExecutor(mm, overlap=True).run([plain, admitted], raise_errors=True)
    assert [r.frames for r in reports] == [6, 6]
    assert opens == {("decode", ref.name): 2, ("probe", video.name): 2}  # one more of each: the plain job's


def test_admitted_and_plain_renders_are_byte_identical(mm, inputs, tmp_path):
    from mimic.runtime.admission import admit
    from mimic.runtime.pipeline import FrameCollector, generate

    ref, video = inputs
    job = _job(tmp_path, ref, driving=video)
    with one_torch_thread():
        a, b = FrameCollector(), FrameCollector()
        generate(mm.components, job, sink=a)
        generate(mm.components, admit(job, mm.base_config), sink=b)
    assert np.array_equal(a.frames(), b.frames())


def test_pose_frame_folders_are_read_at_render_time_once(mm, inputs, tmp_path, monkeypatch):
    """Admission holds only the cheap part; the drawn frames (maybe large) are read by the render."""
    import cv2

    from mimic.runtime import inputs as inputs_module
    from mimic.runtime.admission import admit

    ref, _ = inputs
    folder = tmp_path / "drawn"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((96, 64, 3), 40 * i, np.uint8))
    reads = []
    read = inputs_module._read_pose_frames
    monkeypatch.setattr(inputs_module, "_read_pose_frames", lambda source, hw: reads.append(source) or read(source, hw))
    admitted = admit(_job(tmp_path, ref, pose_frames=folder, ref_pose=folder / "000.png"), mm.base_config)
    assert admitted.inputs.pose_frames is None and reads == []
    with one_torch_thread():
        assert mm.render(admitted).frames == 6
    assert reads == [folder]


def test_admission_checks_the_batch_the_settings_and_the_memory(inputs, tmp_path):
    from mimic.model.presets import default_generation
    from mimic.runtime.admission import AdmittedJob, admit
    from mimic.runtime.jobs import Job

    ref, video = inputs
    base = default_generation("tiny")
    a = Job(reference=ref, driving=video, out=tmp_path / "a.mp4")
    with pytest.raises(InputError, match="another job writes the same output"):
        admit(a, base, others=[Job(reference=ref, driving=video, out=tmp_path / "a.mp4")])
    with pytest.raises(InputError, match=r"^--out .*is another job's \(.*\) --ref input"):
        admit(Job(reference=ref, driving=video, out=tmp_path / "x.mp4"), base, others=[Job(reference=tmp_path / "x.mp4", driving=video, out=tmp_path / "y.mp4")])
    with pytest.raises(InputError, match="--audio needs a video output"):
        admit(Job(reference=ref, driving=video, out=tmp_path / "frames"), base, audio=True)
    with pytest.raises(InputError, match="--driving .* does not exist"):
        admit(Job(reference=ref, driving=tmp_path / "missing.mp4", out=tmp_path / "b.mp4"), base)
    seen = []

    def too_big(config):
        seen.append(config)
        raise InputError("this job needs ~9 GB")

    with pytest.raises(InputError, match="needs ~9 GB"):
        admit(Job(reference=ref, driving=video, out=tmp_path / "b.mp4", overrides={"steps": 3}), base, memory_check=too_big)
    assert [c.steps for c in seen] == [3]
    admitted = admit(a, base)
    assert isinstance(admitted, AdmittedJob) and admitted.config == a.config(base)
    assert min(admitted.inputs.reference.shape[:2]) == admitted.config.resolution  # decoded and cropped to the output size
    assert admitted.inputs.video is not None and admitted.inputs.video.width == 192
    assert admit(admitted, base, others=[a]) is admitted  # admitted once: kept as it is


def test_mimic_run_of_one_job_decodes_the_reference_once_and_probes_the_video_once(tiny_cache, inputs, opens, tmp_path, capsys):
    from _runtime_helpers import run_cli

    ref, video = inputs
    code, _, stderr = run_cli(["run", "--preset", "tiny", "--backend", "torch", "--ref", str(ref), "--driving", str(video), "--out", str(tmp_path / "o.mp4"),
                               "--steps", "2", "--window", "4", "--overlap", "1", "--resolution", "64", "--sample-stride", "1"], capsys)
    assert code == 0, stderr
    assert opens == {("decode", ref.name): 1, ("probe", video.name): 1}
