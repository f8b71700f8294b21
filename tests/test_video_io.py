"""Video reading: stride, timestamp sampling (CFR and VFR), display rotation, bad files; writing:
failures surface instead of hanging, PNG sequences leave no temporary files."""
from __future__ import annotations

import inspect
import os
import threading
from fractions import Fraction

import av
import numpy as np
import pytest

from mimic.errors import InputError
from mimic.files import temp_path
from mimic.media.images import read_image
from mimic.media.video_reader import frame_stride, iter_sampled_frames, probe_video
from mimic.media.video_writer import PngSequenceWriter, VideoWriter, write_rgb_video

LEVEL_STEP = 12


def flat_frames(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Frame i is a flat grey of level 6 + 12·i, so its index survives lossy coding."""
    return [np.full((height, width, 3), 6 + LEVEL_STEP * i, dtype=np.uint8) for i in range(count)]


def frame_index(rgb: np.ndarray) -> int:
    return round((float(rgb.mean()) - 6) / LEVEL_STEP)


@pytest.mark.parametrize("sample_stride, fps, expected", [(2, 30, 2), (2, 29.97, 2), (2, 24, 2), (2, 23.976, 2),
                                                          (2, 48, 4), (2, 50, 4), (2, 60, 4), (1, 30, 1), (3, 72, 9)])
def test_frame_stride(sample_stride, fps, expected):
    assert frame_stride(sample_stride, fps) == expected


@pytest.mark.parametrize("fps, count, sample_stride, indices", [(30, 20, 2, list(range(0, 20, 2))),
                                                                (60, 16, 2, [0, 4, 8, 12]),
                                                                (25, 7, 1, list(range(7)))])
def test_constant_rate_sampling(tmp_path, fps, count, sample_stride, indices):
    path = write_rgb_video(tmp_path / "cfr.mp4", flat_frames(count), fps=fps)
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.frame_count, info.rotation_deg, info.has_audio) == \
        (64, 48, fps, count, 0, False)
    samples = list(iter_sampled_frames(path, sample_stride))
    assert [frame_index(rgb) for _, rgb in samples] == indices
    assert [t for t, _ in samples] == pytest.approx([i / fps for i in indices])
    assert all(rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8 for _, rgb in samples)


def test_variable_frame_rate_is_sampled_by_time(tmp_path):
    times = [0.0, 0.033, 0.066, 0.150, 0.160, 0.170, 0.400, 0.433, 0.466, 0.700]
    path = write_rgb_video(tmp_path / "vfr.mp4", flat_frames(len(times)), fps=30, times_s=times)
    fps = probe_video(path).fps
    assert 15 < fps < 20                                   # the muxer's average: 10 frames in ~0.53 s
    picked = {}
    for sample_stride in (1, 2):
        step = frame_stride(sample_stride, fps) / fps
        targets = [k * step for k in range(int(times[-1] / step) + 1)]
        # nearest written frame for every target time (ties: the earlier one)
        expected = [int(np.argmin([abs(t - target) for t in times])) for target in targets]
        samples = list(iter_sampled_frames(path, sample_stride))
        assert [frame_index(rgb) for _, rgb in samples] == expected
        assert [t for t, _ in samples] == pytest.approx([times[i] for i in expected], abs=1e-9)
        picked[sample_stride] = expected
    # evenly spaced in time, unlike "every frame": frames 1 and 3 fall between targets, the
    # 0.17 -> 0.40 gap repeats frame 5
    assert 1 not in picked[1] and 3 not in picked[1] and picked[1].count(5) == 2


@pytest.mark.parametrize("rotation, shape, corner", [(90, (320, 180), "bottom-left"), (-90, (320, 180), "top-right"),
                                                     (180, (180, 320), "bottom-right"), (0, (180, 320), "top-left")])
def test_display_rotation_is_applied(tmp_path, rotation, shape, corner):
    stored = np.zeros((180, 320, 3), dtype=np.uint8)
    stored[:40, :40] = 255                                  # marker in the stored top-left corner
    path = write_rgb_video(tmp_path / "rotated.mp4", [stored] * 3, fps=30, rotation_deg=rotation)
    info = probe_video(path)
    assert (info.height, info.width) == shape and info.rotation_deg == rotation % 360
    _, rgb = next(iter_sampled_frames(path, 1))
    assert rgb.shape[:2] == shape
    # counter-clockwise display rotation: 90° moves the top-left corner to the bottom-left
    h, w = shape
    corners = {"top-left": rgb[10:30, 10:30], "top-right": rgb[10:30, w - 30:w - 10],
               "bottom-left": rgb[h - 30:h - 10, 10:30], "bottom-right": rgb[h - 30:h - 10, w - 30:w - 10]}
    assert {name for name, patch in corners.items() if patch.mean() > 200} == {corner}


def test_frames_are_streamed(tmp_path):
    path = write_rgb_video(tmp_path / "long.mp4", flat_frames(20), fps=30)
    samples = iter_sampled_frames(path, 1)
    assert inspect.isgenerator(samples)
    assert frame_index(next(samples)[1]) == 0
    samples.close()


def test_audio_track_is_reported(tmp_path):
    path = tmp_path / "with_audio.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=44100)
        audio.layout = "mono"
        for image in flat_frames(3):
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        silence.sample_rate, silence.pts, silence.time_base = 44100, 0, Fraction(1, 44100)
        container.mux(audio.encode(silence))
        container.mux(video.encode())
        container.mux(audio.encode())
    assert probe_video(path).has_audio
    assert len(list(iter_sampled_frames(path, 1))) == 3


def test_bad_videos(tmp_path):
    with pytest.raises(InputError, match="video not found"):
        probe_video(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match="video not found"):
        probe_video(tmp_path)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="cannot read video .*empty.mp4"):
        probe_video(tmp_path / "empty.mp4")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match="noise.mp4"):
        list(iter_sampled_frames(tmp_path / "noise.mp4", 1))
    container = av.open(str(tmp_path / "frameless.mkv"), "w")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    with pytest.raises(InputError, match="frameless.mkv"):
        probe_video(tmp_path / "frameless.mkv")
    good = write_rgb_video(tmp_path / "good.mp4", flat_frames(10), fps=30).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) * 7 // 10])   # moov atom lost
    with pytest.raises(InputError, match="cut.mp4"):
        list(iter_sampled_frames(tmp_path / "cut.mp4", 1))
    with pytest.raises(InputError, match="sample stride"):
        next(iter_sampled_frames(tmp_path / "good.mp4", 0))


def test_writer_rejects_odd_sizes_atomically(tmp_path):
    with pytest.raises(InputError, match="even width and height"):
        write_rgb_video(tmp_path / "odd.mp4", [np.zeros((47, 64, 3), dtype=np.uint8)], fps=30)
    with pytest.raises(InputError, match="no frames"):
        write_rgb_video(tmp_path / "none.mp4", [], fps=30)
    assert list(tmp_path.iterdir()) == []


def test_writer_failure_when_finishing_is_raised(tmp_path):
    """A short clip reaches the muxer only when the encoder is flushed, after the last write: a
    failure there is raised by close() (it used to wait forever) and publishes nothing."""
    target = tmp_path / "out.mp4"
    temp_path(target).mkdir()                               # the muxer cannot create its file
    errors = []

    def render():
        try:
            with VideoWriter(target, 15, (64, 64)) as writer:
                writer.write(np.zeros((2, 3, 64, 64), np.uint8))
        except InputError as err:
            errors.append(str(err))

    worker = threading.Thread(target=render, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "VideoWriter.close() hung after an encoder failure"
    assert len(errors) == 1 and errors[0].startswith(f"cannot write video {target}: ")
    assert not target.exists()


def test_png_sequence_is_lossless_and_leaves_no_temporary_files(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (3, 3, 24, 32), dtype=np.uint8)
    with PngSequenceWriter(tmp_path / "seq", start=5) as writer:
        writer.write(frames)
    assert sorted(os.listdir(tmp_path / "seq")) == ["frame_000005.png", "frame_000006.png", "frame_000007.png"]
    for i, frame in enumerate(frames):
        assert np.array_equal(read_image(tmp_path / "seq" / f"frame_{5 + i:06d}.png"), frame.transpose(1, 2, 0))
