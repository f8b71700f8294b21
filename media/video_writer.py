"""H.264 output without holding the video in memory, and never a half-written file.

:class:`VideoWriter` is the one video encoder: PyAV (libx264, yuv420p) on a background thread fed
by a bounded queue, writing to a temporary file beside the target that is published (fsync +
rename, :mod:`mimic.files`) only when the video is complete. It also writes variable-frame-rate
timestamps and a display rotation. :func:`write_rgb_video` feeds it (H, W, 3) frames from any
iterable. :class:`PngSequenceWriter` is the render-farm variant (numbered PNGs).
"""
from __future__ import annotations

import itertools
import os
import queue
import re
import shutil
import threading
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from mimic.errors import InputError
from mimic.files import fsync_dir, publish, remove_quietly, temp_path
from mimic.media.images import write_png

_MILLISECOND = Fraction(1, 1000)


def check_writable(path: Path, create: bool = True, what: str = "output") -> None:
    """Fail before any work when ``path`` cannot be written: a parent that is a file, a folder that
    is not writable, a name too long for the file system once the temporary suffix is added.
    ``create``: make the missing folders (writers do; validation only checks, leaving no folders
    behind when a job is refused)."""
    from mimic.files import temp_path

    path = Path(path)
    parent = path.parent
    existing = parent
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"{what} {path}: {existing} is a file, not a folder")
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    longest = max(len(path.name.encode()), len(temp_path(path).name.encode()))
    if longest > name_max:
        raise InputError(f"{what} {path}: the file name is too long ({longest} bytes with the temporary suffix; "
                         f"this file system allows {name_max})")
    if create and not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create {what} folder {parent}: {err.strerror}") from None
    if not os.access(existing if not parent.exists() else parent, os.W_OK):
        raise InputError(f"{what} folder {existing if not parent.exists() else parent} is not writable")


class VideoWriter:
    """``with VideoWriter(path, fps, (H, W)) as w: w.write(frames_uint8_NCHW)``.

    ``fps``: a float is rounded to the nearest fraction with denominator <= 1001 (29.97 ->
    30000/1001); a :class:`~fractions.Fraction` is used as given. ``crf`` overrides libx264's
    default (23). ``times_s`` (seconds, one per frame, consumed as frames are written) stores
    millisecond presentation times: a variable frame rate file. ``rotation_deg`` stores a
    counter-clockwise display rotation. ``container_format`` None picks the container from the
    path's extension; the default always writes MP4. Width and height must be even.

    An exception inside the ``with`` block discards the temporary file: the target is either the
    complete previous file (if any) or the complete new one. Encoding failures surface on the next
    :meth:`write` or on :meth:`close`: :class:`InputError` for FFmpeg and file-system errors.
    """

    def __init__(self, path: Path, fps: float | Fraction, size_hw: tuple[int, int], crf: int | None = None,
                 max_queued_chunks: int = 4, *, times_s: Iterable[float] | None = None, rotation_deg: int = 0,
                 codec: str = "libx264", container_format: str | None = "mp4"):
        self.path = Path(path)
        height, width = size_hw
        if height % 2 or width % 2:
            raise InputError(f"yuv420p video needs an even width and height, got {width}x{height}")
        check_writable(self.path)
        self.fps = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
        self.size_hw = (height, width)
        self.crf = crf
        self.rotation_deg = rotation_deg
        self.codec = codec
        self.container_format = container_format
        self.frames_written = 0
        self._times = iter(times_s) if times_s is not None else None
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued_chunks)
        self._error: BaseException | None = None
        self._tmp = temp_path(self.path)
        self._thread = threading.Thread(target=self._encode, name="mimic-video-encoder", daemon=True)
        self._thread.start()

    def _encode(self) -> None:
        import av

        ended = False  # the producer's end-of-stream None was taken off the queue
        try:
            with av.open(str(self._tmp), mode="w", format=self.container_format) as container:
                stream = container.add_stream(self.codec, rate=self.fps)
                stream.height, stream.width = self.size_hw
                stream.pix_fmt = "yuv420p"
                if self.crf is not None:
                    stream.options = {"crf": str(self.crf)}
                if self.rotation_deg:
                    stream.set_display_rotation(self.rotation_deg)
                if self._times is not None:
                    stream.codec_context.time_base = _MILLISECOND
                    stream.time_base = _MILLISECOND
                while (item := self._queue.get()) is not None:
                    chunk, pts = item
                    for index, frame in enumerate(chunk):
                        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.transpose(1, 2, 0)), format="rgb24")
                        if pts is not None:
                            vf.pts = pts[index]
                            vf.time_base = _MILLISECOND
                        for packet in stream.encode(vf):
                            container.mux(packet)
                ended = True
                for packet in stream.encode():
                    container.mux(packet)
        except BaseException as err:  # surfaced to the producer on the next write/close
            self._error = err
            while not ended and self._queue.get() is not None:  # drain so the producer never blocks
                pass

    def write(self, frames: np.ndarray) -> None:
        """Queue (N, 3, H, W) uint8 RGB frames; blocks while ``max_queued_chunks`` are pending."""
        if self._error is not None:
            raise _write_error(self.path, self._error) from self._error
        if frames.ndim != 4 or frames.shape[1] != 3 or tuple(frames.shape[2:]) != tuple(self.size_hw) or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 (N, 3, {self.size_hw[0]}, {self.size_hw[1]}) frames, got {frames.dtype} {frames.shape}")
        pts = None
        if self._times is not None:
            pts = [round(t * 1000) for t in itertools.islice(self._times, len(frames))]
            if len(pts) < len(frames):
                raise ValueError(f"times_s ended after {self.frames_written + len(pts)} frames")
        self._queue.put((frames.copy(), pts))
        self.frames_written += len(frames)

    def close(self, commit: bool = True) -> None:
        """Finish encoding; publish the file when ``commit`` (and frames were written), else discard it."""
        self._queue.put(None)
        self._thread.join()
        if commit and self._error is None and self.frames_written > 0:
            try:
                publish(self._tmp, self.path)
            except OSError as err:
                remove_quietly(self._tmp)
                raise _write_error(self.path, err) from err
            return
        remove_quietly(self._tmp)
        if commit and self._error is not None:
            raise _write_error(self.path, self._error) from self._error

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)


def write_rgb_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, *,
                    times_s: Iterable[float] | None = None, rotation_deg: int = 0,
                    codec: str = "libx264") -> Path:
    """Encode RGB uint8 (H, W, 3) frames with :class:`VideoWriter` (yuv420p, libx264 defaults,
    CRF 23; the container follows the extension), atomically; returns ``path``.

    ``fps`` is kept to a denominator of 10⁶. ``times_s`` gives per-frame presentation times
    (millisecond precision) for variable frame rate files; ``rotation_deg`` stores a
    counter-clockwise display rotation. Width and height must be even.
    """
    path = Path(path)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise InputError(f"no frames to write to {path}")
    rate = Fraction(fps).limit_denominator(1_000_000)
    with VideoWriter(path, rate, first.shape[:2], times_s=times_s, rotation_deg=rotation_deg, codec=codec,
                     container_format=None) as writer:
        for image in itertools.chain([first], frames):
            writer.write(image.transpose(2, 0, 1)[None])
    return path


FRAME_PATTERN = "frame_{:06d}.png"
_OWN_FILES = re.compile(r"^(frame_\d{6}\.png|report\.json)$")


def foreign_files(folder: Path) -> list[str]:
    """Files in ``folder`` that a PNG-sequence render did not write (it replaces the folder whole)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not _OWN_FILES.match(p.name))


def remove_stale_folders(folder: Path, kinds: tuple[str, ...]) -> list[Path]:
    """Remove the ``.NAME.PID.part`` (and ``.NAME.PID.old``) folders beside ``folder`` left by a
    render of the same output whose process is gone (SIGKILL, power loss): nothing else would ever
    delete them. A folder whose PID is alive is kept, even if the PID was reused (a later render
    removes it). Returns the removed folders."""
    folder = Path(folder)
    stem, suffix = re.escape(folder.stem), re.escape(folder.suffix)
    names = re.compile(rf"^\.{stem}\.(\d+)\.part{suffix}$") if "part" in kinds else None
    olds = re.compile(rf"^\.{re.escape(folder.name)}\.(\d+)\.old$") if "old" in kinds else None
    removed = []
    try:
        siblings = list(folder.parent.iterdir())
    except OSError:
        return removed
    for path in siblings:
        match = (names and names.match(path.name)) or (olds and olds.match(path.name))
        if match and path.is_dir() and not path.is_symlink() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one of another user counts). Outside POSIX
    every PID counts as alive: there ``os.kill(pid, 0)`` would terminate the process."""
    if os.name != "posix" or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process, or no PID at all: keep the folder
        return True
    return True


class PngSequenceWriter:
    """Numbered PNGs ``frame_000001.png`` ... rendered into a temporary folder beside ``folder`` and
    swapped in whole on a clean close: a reader never sees old and new frames mixed, and frames of an
    earlier, longer render do not survive. A folder holding anything but frames and a report is
    refused (it would be replaced)."""

    def __init__(self, folder: Path, start: int = 1):
        self.folder = Path(folder)
        check_writable(self.folder / FRAME_PATTERN.format(start))
        foreign = foreign_files(self.folder)
        if foreign:
            raise InputError(f"--out {self.folder} holds other files ({', '.join(foreign[:3])}): PNG frames go to a new or frames-only folder")
        self.index = start
        self.frames_written = 0
        self._tmp = temp_path(self.folder)
        shutil.rmtree(self._tmp, ignore_errors=True)
        remove_stale_folders(self.folder, ("part",))
        self._tmp.mkdir()

    def write(self, frames: np.ndarray) -> None:
        for frame in frames:
            write_png(self._tmp / FRAME_PATTERN.format(self.index), frame.transpose(1, 2, 0))
            self.index += 1
            self.frames_written += 1

    def close(self, commit: bool = True) -> None:
        """Swap the new frames in (``commit``) or discard them; the previous folder stays intact until then."""
        if not self._tmp.exists():
            return
        if not commit:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        old = self.folder.with_name(f".{self.folder.name}.{os.getpid()}.old")
        try:
            if self.folder.exists():
                os.replace(self.folder, old)
            os.replace(self._tmp, self.folder)
        except OSError as err:
            shutil.rmtree(self._tmp, ignore_errors=True)
            if old.exists() and not self.folder.exists():
                os.replace(old, self.folder)
            raise InputError(f"cannot write {self.folder}: {err.strerror or err}") from None
        shutil.rmtree(old, ignore_errors=True)
        remove_stale_folders(self.folder, ("part", "old"))  # a killed render's leftovers, now superseded
        fsync_dir(self.folder.parent)

    def __enter__(self) -> "PngSequenceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)


def _write_error(path: Path, err: BaseException) -> Exception:
    """One line for FFmpeg and file-system errors (:class:`InputError`); anything else is a bug."""
    import av

    from mimic.media.video_reader import _reason

    if isinstance(err, (av.error.FFmpegError, OSError)):
        return InputError(f"cannot write video {path}: {_reason(err)}")
    return RuntimeError(f"video encoder failed: {err}")
