"""The pose file: a :class:`~mimic.pose.sequence.PoseSequence` as a versioned ``.npz``.

Arrays (no pickled objects; people of all frames concatenated, T = total people):

* ``format`` "mimic-dwpose-poses", ``format_version`` 1;
* ``keypoints`` (T, 134, 2) float64 normalised, ``scores`` (T, 134) float64, ``boxes`` (T, 4)
  float64 pixels — the OpenPose-134 layout of spec §4.4;
* ``people_per_frame`` (N,) int64, ``person_detected`` (N,) bool, ``frame_times_s`` (N,) float64;
* ``video_hw`` (2,) int64, ``fps``, ``sample_stride``, ``frame_stride``, ``source``,
  ``detect_frames_per_s``;
* optional ``extraction_warnings`` (N,) str: what the extraction warned about (e.g. the tiny preset's
  random DWPose weights), so a job driven by the file later says it too.

Writes are atomic (:func:`mimic.files.atomic_write_bytes`: temporary file in the same folder,
fsync, rename). Anything that is not such a file loads as :class:`InputError`.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from mimic.errors import InputError
from mimic.files import atomic_write_bytes
from .postprocess import NUM_KEYPOINTS, PoseFrame
from .sequence import PoseSequence

FORMAT_NAME = "mimic-dwpose-poses"
FORMAT_VERSION = 1
_FIELDS = {  # name: (dtype kind(s), shape with -1 for T / -2 for N)
    "format": ("U", ()), "format_version": ("iu", ()),
    "keypoints": ("f", (-1, NUM_KEYPOINTS, 2)), "scores": ("f", (-1, NUM_KEYPOINTS)), "boxes": ("f", (-1, 4)),
    "people_per_frame": ("iu", (-2,)), "person_detected": ("b", (-2,)), "frame_times_s": ("f", (-2,)),
    "video_hw": ("iu", (2,)), "fps": ("f", ()), "sample_stride": ("iu", ()), "frame_stride": ("iu", ()),
    "source": ("U", ()), "detect_frames_per_s": ("f", ()),
}


def save_poses(path: str | Path, poses: PoseSequence) -> Path:
    """Write ``poses`` to ``path`` atomically and return the path."""
    frames = poses.frames
    arrays = {
        "format": np.array(FORMAT_NAME), "format_version": np.array(FORMAT_VERSION),
        "keypoints": _concat([f.keypoints for f in frames], (0, NUM_KEYPOINTS, 2)),
        "scores": _concat([f.scores for f in frames], (0, NUM_KEYPOINTS)),
        "boxes": _concat([f.boxes for f in frames], (0, 4)),
        "people_per_frame": np.array([f.num_people for f in frames], dtype=np.int64),
        "person_detected": np.array([f.person_detected for f in frames], dtype=bool),
        "frame_times_s": np.array(poses.frame_times_s, dtype=np.float64),
        "video_hw": np.array(poses.video_hw, dtype=np.int64), "fps": np.array(float(poses.fps)),
        "sample_stride": np.array(poses.sample_stride), "frame_stride": np.array(poses.frame_stride),
        "source": np.array(poses.source), "detect_frames_per_s": np.array(float(poses.detect_frames_per_s)),
    }
    if poses.extraction_warnings:  # optional: what the extraction warned about (random DWPose weights) travels with the poses
        arrays["extraction_warnings"] = np.array(poses.extraction_warnings)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = Path(path)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from err
    return path


def load_poses(path: str | Path) -> PoseSequence:
    """Read a pose file written by :func:`save_poses`; anything else is an :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pose file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(f"{path} is not a pose file ({type(err).__name__})") from err
    marker, version = arrays.get("format"), arrays.get("format_version")
    if marker is None or marker.shape != () or str(marker) != FORMAT_NAME:
        raise InputError(f"{path} is not a pose file (no '{FORMAT_NAME}' format marker)")
    if version is None or version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        raise InputError(f"{path} has pose format version {version}; this version reads {FORMAT_VERSION}")
    _check_fields(path, arrays)
    counts = arrays["people_per_frame"].astype(np.int64)
    if (counts < 0).any() or counts.sum() != len(arrays["keypoints"]):
        raise InputError(f"{path} is corrupt: people_per_frame does not add up to the stored keypoints")
    height, width = (int(v) for v in arrays["video_hw"])
    if height <= 0 or width <= 0:
        raise InputError(f"{path} is corrupt: its video size is {width}x{height}")
    if float(arrays["fps"]) <= 0 or int(arrays["sample_stride"]) < 1 or int(arrays["frame_stride"]) < 1:
        raise InputError(f"{path} is corrupt: fps {float(arrays['fps']):g}, sample stride {int(arrays['sample_stride'])}, frame stride {int(arrays['frame_stride'])}")
    ends = np.cumsum(counts)
    frames = tuple(PoseFrame(arrays["keypoints"][end - n:end].astype(np.float64),
                             arrays["scores"][end - n:end].astype(np.float64),
                             arrays["boxes"][end - n:end].astype(np.float64),
                             bool(detected), (height, width))
                   for n, end, detected in zip(counts, ends, arrays["person_detected"]))
    return PoseSequence(frames, tuple(float(t) for t in arrays["frame_times_s"]), (height, width),
                        float(arrays["fps"]), int(arrays["sample_stride"]), int(arrays["frame_stride"]),
                        str(arrays["source"]), float(arrays["detect_frames_per_s"]), _warnings(path, arrays.get("extraction_warnings")))


def _warnings(path: Path, array: np.ndarray | None) -> tuple[str, ...]:
    """The optional ``extraction_warnings`` field: strings, one per warning (absent in older files)."""
    if array is None:
        return ()
    if array.dtype.kind != "U" or array.ndim != 1:
        raise InputError(f"{path} is corrupt: field 'extraction_warnings' is {array.dtype} {array.shape}, expected U (N,)")
    return tuple(str(w) for w in array)


def _concat(parts: list[np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(empty_shape)


def _check_fields(path: Path, arrays: dict[str, np.ndarray]) -> None:
    total, frames = len(arrays.get("keypoints", ())), len(arrays.get("people_per_frame", ()))
    for name, (kinds, shape) in _FIELDS.items():
        array = arrays.get(name)
        want = tuple(total if d == -1 else frames if d == -2 else d for d in shape)
        if array is None or array.dtype.kind not in kinds or array.shape != want:
            found = "missing" if array is None else f"{array.dtype} {array.shape}"
            raise InputError(f"{path} is corrupt: field '{name}' is {found}, expected {kinds} {want}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InputError(f"{path} is corrupt: field '{name}' holds NaN or infinite values")
