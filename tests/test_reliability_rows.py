"""Rows of the reliability issue, one test each: every image mode read as the picture a viewer
shows (row 4), a killed PNG render's temporary folder removed by the next one (12), an unwritable
cache folder as one line (15), `mimic pose` refusing an image (17), pose extraction reporting its
progress (21)."""
from __future__ import annotations

import errno
import os
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from _runtime_helpers import SMALL_ARGS, make_inputs, run_cli, write_synthetic_driving_video
from mimic.media.images import read_image


# ------------------------------------------------------------------ row 4: every mode, one picture
H, W = 48, 64
_rng = np.random.default_rng(4)
_TABLE = np.concatenate([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]],
                         _rng.integers(0, 256, (196, 3))]).astype(np.uint8)  # 200 colours: a palette holds them exactly
INDEX = _rng.integers(0, len(_TABLE), (H, W)).astype(np.uint8)
ORIGINAL = _TABLE[INDEX]                                                 # the 8-bit RGB picture
GRAY = np.asarray(Image.fromarray(ORIGINAL).convert("L"))                # ... and in 8-bit gray
ALPHA = _rng.choice(np.array([0, 0, 64, 128, 200, 255, 255], np.uint8), (H, W))
INDEX_ALPHA = _rng.choice(np.array([0, 90, 255, 255], np.uint8), len(_TABLE))  # per palette entry (tRNS)
NOISE = _rng.integers(-128, 129, (H, W, 3))                              # < half an 8-bit level in 16 bits


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """What a viewer shows: ``colour`` composited over a white page (integer rounding, no ties)."""
    c, a = colour.astype(np.int64), alpha.astype(np.int64)[..., None]
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _deep(values8: np.ndarray) -> np.ndarray:
    """8-bit samples as 16-bit ones (v * 257) off by up to half a level: rounding must find v."""
    return np.clip(values8.astype(np.int64) * 257 + NOISE[..., : values8.shape[-1]].reshape(values8.shape), 0, 65535)


def _raw_png(path: Path, samples: np.ndarray, colour_type: int, depth: int, chunks=()) -> Path:
    """A PNG written from the specification (filter 0), for layouts no library here writes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    rows = samples.astype(">u2" if depth == 16 else np.uint8).reshape(samples.shape[0], -1)
    data = zlib.compress(b"".join(b"\x00" + row.tobytes() for row in rows))
    ihdr = struct.pack(">IIBBBBB", samples.shape[1], samples.shape[0], depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + b"".join(chunk(k, b) for k, b in chunks)
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def _pil(image: Image.Image, name: str, **params):
    return lambda folder: (image.save(folder / name, **params), folder / name)[1]


def _cv2(bgr: np.ndarray, name: str):
    return lambda folder: (cv2.imwrite(str(folder / name), bgr), folder / name)[1]


def _palette() -> Image.Image:
    im = Image.fromarray(INDEX, "P")
    im.putpalette(_TABLE.tobytes())
    return im


_GRAY16 = _deep(GRAY[..., None])[..., 0].astype(np.uint16)
_RGB16 = _deep(ORIGINAL).astype(np.uint16)
_A16 = _deep(ALPHA[..., None])[..., 0].astype(np.uint16)
_KEY = tuple(int(v) for v in _TABLE[5])                                  # the tRNS colour of an RGB PNG
_KEYED = np.all(ORIGINAL == _KEY, axis=2)
_PA = _palette()
_PA.putalpha(Image.fromarray(ALPHA))
_BW = np.where(GRAY >= 128, 255, 0).astype(np.uint8)
_EXIF6 = Image.Exif()
_EXIF6[0x0112] = 6

# (name, write(folder) -> path, expected RGB, largest difference allowed)
MODES = [
    ("8-bit RGB PNG", _pil(Image.fromarray(ORIGINAL), "rgb.png"), ORIGINAL, 0),
    ("16-bit gray PNG (I;16)", _pil(Image.fromarray(_GRAY16), "g16.png"), _rgb(GRAY), 0),
    ("16-bit gray TIFF (I;16B)", _pil(Image.frombytes("I;16B", (W, H), _GRAY16.astype(">u2").tobytes()), "g16b.tif"), _rgb(GRAY), 0),
    ("32-bit int TIFF (I)", _pil(Image.fromarray(_GRAY16.astype(np.int32)), "gi.tif"), _rgb(GRAY), 0),
    ("16-bit gray PNG with a tRNS level", lambda f: _raw_png(f / "g16t.png", _GRAY16, 0, 16, [(b"tRNS", struct.pack(">H", int(_GRAY16[0, 0])))]),
     np.where((_GRAY16 == _GRAY16[0, 0])[..., None], 255, _rgb(GRAY)).astype(np.uint8), 0),
    ("16-bit RGB PNG", _cv2(_RGB16[..., ::-1], "rgb16.png"), ORIGINAL, 0),
    ("16-bit RGB TIFF", _cv2(_RGB16[..., ::-1], "rgb16.tif"), ORIGINAL, 0),
    ("16-bit RGBA PNG", _cv2(np.dstack([_RGB16[..., ::-1], _A16]), "rgba16.png"), _over_white(ORIGINAL, ALPHA), 1),
    ("16-bit gray+alpha PNG", lambda f: _raw_png(f / "la16.png", np.dstack([_GRAY16, _A16]), 4, 16), _over_white(_rgb(GRAY), ALPHA), 1),
    ("palette PNG (P)", _pil(_palette(), "p.png"), ORIGINAL, 0),
    ("palette PNG with transparency", _pil(_palette(), "pt.png", transparency=INDEX_ALPHA.tobytes()),
     _over_white(ORIGINAL, INDEX_ALPHA[INDEX]), 0),
    ("palette + alpha TIFF (PA)", _pil(_PA, "pa.tif"), _over_white(ORIGINAL, ALPHA), 0),
    ("gray + alpha PNG (LA)", _pil(Image.fromarray(np.dstack([GRAY, ALPHA]), "LA"), "la.png"), _over_white(_rgb(GRAY), ALPHA), 0),
    ("RGBA PNG", _pil(Image.fromarray(np.dstack([ORIGINAL, ALPHA]), "RGBA"), "rgba.png"), _over_white(ORIGINAL, ALPHA), 0),
    ("RGB PNG with a tRNS colour", _pil(Image.fromarray(ORIGINAL), "rgbt.png", transparency=_KEY),
     np.where(_KEYED[..., None], 255, ORIGINAL).astype(np.uint8), 0),
    ("CMYK TIFF", _pil(Image.fromarray(ORIGINAL).convert("CMYK"), "cmyk.tif"), ORIGINAL, 0),
    ("1-bit PNG", _pil(Image.fromarray(_BW).convert("1"), "bw.png"), _rgb(_BW), 0),
    ("float TIFF 0..255 (F, as PIL writes)", _pil(Image.fromarray(GRAY.astype(np.float32)), "f255.tif"), _rgb(GRAY), 0),
    ("float TIFF 0..1 (F)", _pil(Image.fromarray(GRAY.astype(np.float32) / 255), "f1.tif"), _rgb(GRAY), 0),
    ("16-bit RGB PNG shown rotated (EXIF 6)",
     lambda f: _raw_png(f / "rgb16r.png", _RGB16, 2, 16, [(b"eXIf", _EXIF6.tobytes()[6:])]), np.rot90(ORIGINAL, -1), 0),
]


@pytest.mark.parametrize("name,write,expected,tolerance", MODES, ids=[m[0] for m in MODES])
def test_every_image_mode_reads_as_the_picture_a_viewer_shows(name, write, expected, tolerance, tmp_path):
    """Palettes hold the 200 colours exactly, so they too must match exactly; 16-bit samples are
    rounded (v / 257), and only 16-bit alpha (not a multiple of 257) may move a level."""
    rgb = read_image(write(tmp_path))
    assert rgb.dtype == np.uint8 and rgb.shape == expected.shape
    assert np.abs(rgb.astype(int) - expected).max() <= tolerance, name


def test_sixteen_bit_gray_is_not_washed_out(tmp_path):
    """The issue's numbers: the 16-bit picture has the 8-bit picture's mean and levels."""
    Image.fromarray(_GRAY16).save(tmp_path / "g16.png")
    rgb = read_image(tmp_path / "g16.png")
    assert abs(rgb.mean() - GRAY.mean()) < 0.01 and len(np.unique(rgb)) == len(np.unique(GRAY))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_colour_is_turned_upright_like_eight_bit(orientation, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(ORIGINAL).save(tmp_path / "o8.png", exif=exif)
    _raw_png(tmp_path / "o16.png", _RGB16, 2, 16, [(b"eXIf", exif.tobytes()[6:])])
    assert np.array_equal(read_image(tmp_path / "o16.png"), read_image(tmp_path / "o8.png"))


def test_transparency_can_show_over_black(tmp_path):
    """Pose images are drawn on black: their readers pass ``background=0``."""
    Image.fromarray(np.dstack([ORIGINAL, ALPHA]), "RGBA").save(tmp_path / "rgba.png")
    rgb = read_image(tmp_path / "rgba.png", background=0)
    assert np.array_equal(rgb[ALPHA == 0], np.zeros(((ALPHA == 0).sum(), 3), np.uint8))


# ------------------------------------------------------------------ row 12: a killed render's debris
def test_png_writer_removes_the_temporary_folders_of_dead_renders(tmp_path):
    from mimic.media.video_writer import PngSequenceWriter

    out = tmp_path / "frames"
    dead = tmp_path / ".frames.99999999.part"           # no such PID: a render killed while writing
    dead.mkdir()
    (dead / "frame_000001.png").write_bytes(b"half")
    dead_old = tmp_path / ".frames.99999999.old"        # killed between its two renames
    dead_old.mkdir()
    live = tmp_path / f".frames.{os.getppid()}.part"    # a process that is alive: maybe rendering now
    live.mkdir()
    other = tmp_path / ".takes.99999999.part"           # another output's
    other.mkdir()
    with PngSequenceWriter(out) as writer:
        assert not dead.exists()
        writer.write(np.zeros((2, 3, 8, 8), np.uint8))
    assert sorted(p.name for p in out.iterdir()) == ["frame_000001.png", "frame_000002.png"]
    assert not dead_old.exists() and live.is_dir() and other.is_dir()


# ------------------------------------------------------------------ row 15: an unwritable cache
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"), frames=6)


def _one_line(code: int, stderr: str, cache: Path) -> None:
    assert code == 3, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert re.fullmatch(rf"error: MIMIC_CACHE_DIR {re.escape(str(cache))} is not writable \(.+\): "
                        r"set MIMIC_CACHE_DIR to a writable folder\n", stderr), stderr


def test_cache_folder_under_a_file_is_one_line(tmp_path, inputs, monkeypatch, capsys):
    ref, video = inputs
    (tmp_path / "file.txt").write_text("x")
    cache = tmp_path / "file.txt" / "cache"
    monkeypatch.setenv("MIMIC_CACHE_DIR", str(cache))
    code, _, stderr = run_cli(["run", "--preset", "tiny", *SMALL_ARGS, "--ref", str(ref), "--driving", str(video),
                               "--out", str(tmp_path / "o.mp4")], capsys)
    _one_line(code, stderr, cache)
    assert not (tmp_path / "o.mp4").exists()


def test_read_only_cache_folder_is_one_line(tmp_path, inputs, monkeypatch, capsys):
    """Tests run as root, whom chmod does not stop: the file system's refusal is simulated."""
    import tempfile

    ref, video = inputs
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    monkeypatch.setenv("MIMIC_CACHE_DIR", str(cache))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(cache))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    code, _, stderr = run_cli(["run", "--preset", "tiny", *SMALL_ARGS, "--ref", str(ref), "--driving", str(video),
                               "--out", str(tmp_path / "o.mp4")], capsys)
    _one_line(code, stderr, cache)
    assert "Read-only file system" in stderr


# ------------------------------------------------------------------ row 17: an image given to `mimic pose`
def test_pose_refuses_an_image_as_the_video(tiny_cache, tmp_path, inputs, capsys):
    ref, _ = inputs
    code, stdout, stderr = run_cli(["pose", str(ref), "--out", str(tmp_path / "p.npz"), "--preset", "tiny"], capsys)
    assert code == 2, (stdout, stderr)
    assert stderr == f"error: {ref} is an image, not a video: give a driving video\n"
    assert not (tmp_path / "p.npz").exists()


# ------------------------------------------------------------------ row 21: pose extraction's progress
def test_pose_extraction_reports_progress_with_an_eta(tmp_path, monkeypatch, caplog):
    from mimic.model.tiny_dwpose import write_tiny_dwpose
    from mimic.pose import extract
    from mimic.pose.detector import DWPoseDetector

    video = write_synthetic_driving_video(tmp_path / "drive.mp4", num_frames=24, size_hw=(160, 96))
    detector = DWPoseDetector(*write_tiny_dwpose(tmp_path / "dwpose"))
    clock = iter(range(0, 10_000, 3))                   # every look at the clock: 3 s later
    monkeypatch.setattr(extract, "monotonic", lambda: float(next(clock)))
    seen: list[tuple[int, int | None]] = []
    caplog.set_level("INFO", logger="mimic.pose")
    poses = extract.extract_video_poses(detector, video, sample_stride=1, batch_size=4,
                                        progress=lambda done, total: seen.append((done, total)))
    assert len(poses.frames) == 24
    assert seen == [(n, 24) for n in range(4, 25, 4)]
    lines = [m for m in caplog.messages if "ETA" in m]
    # batches end at 3, 6, ... 18 s: a line at most every 5 s (6, 12, 18 s), then the summary
    assert lines == ["DWPose: 8/24 frames of drive.mp4 (33%), 1.3 frames/s, ETA 12 s",
                     "DWPose: 16/24 frames of drive.mp4 (66%), 1.3 frames/s, ETA 6 s",
                     "DWPose: 24/24 frames of drive.mp4 (100%), 1.3 frames/s, ETA 0 s"]
    assert caplog.messages[-1] == "DWPose: 24 frames of drive.mp4 in 21.0 s (1.1 frames/s including decoding)"


def test_expected_samples_from_count_or_duration():
    from mimic.media.video_reader import VideoInfo
    from mimic.pose.extract import expected_samples

    assert expected_samples(VideoInfo("v.mp4", 64, 64, 60.0, 601, 10.0, 0, False), 2) == 151  # every 2 x int(60 / 24) frames
    assert expected_samples(VideoInfo("v.mkv", 64, 64, 25.0, None, 600.0, 0, False), 2) == 7500
    assert expected_samples(VideoInfo("v.ts", 64, 64, 25.0, None, None, 0, False), 2) is None
