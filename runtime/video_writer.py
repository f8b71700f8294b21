"""H.264 output without holding the video in memory, and never a half-written file.

:class:`VideoWriter` encodes frames with PyAV (libx264, yuv420p) on a background thread fed by a
bounded queue, writes to a temporary file beside the target and renames it into place only when
the video is complete. :class:`PngSequenceWriter` is the render-farm variant (numbered PNGs).
"""
from __future__ import annotations

import os
import queue
import tempfile
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from mimic.errors import InputError


def check_writable(path: Path) -> None:
    """Fail before any work when the output cannot be written."""
    parent = Path(path).parent if not Path(path).is_dir() else Path(path)
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"cannot create output folder {parent}: {err.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"output folder {parent} is not writable")


class VideoWriter:
    """``with VideoWriter(path, fps, (H, W)) as w: w.write(frames_uint8_NCHW)``.

    An exception inside the ``with`` block discards the temporary file: the target is either the
    complete previous file (if any) or the complete new one.
    """

    def __init__(self, path: Path, fps: float, size_hw: tuple[int, int], crf: int | None = None, max_queued_chunks: int = 4):
        self.path = Path(path)
        check_writable(self.path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.size_hw = size_hw
        self.crf = crf
        self.frames_written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued_chunks)
        self._error: BaseException | None = None
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part.mp4", dir=self.path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the final file gets normal permissions
        self._tmp = Path(tmp)
        self._thread = threading.Thread(target=self._encode, name="mimic-video-encoder", daemon=True)
        self._thread.start()

    def _encode(self) -> None:
        import av

        try:
            with av.open(str(self._tmp), mode="w", format="mp4") as container:
                stream = container.add_stream("libx264", rate=self.fps)
                stream.height, stream.width = self.size_hw
                stream.pix_fmt = "yuv420p"
                if self.crf is not None:
                    stream.options = {"crf": str(self.crf)}
                while (chunk := self._queue.get()) is not None:
                    for frame in chunk:
                        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.transpose(1, 2, 0)), format="rgb24")
                        for packet in stream.encode(vf):
                            container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        except BaseException as err:  # surfaced to the producer on the next write/close
            self._error = err
            while self._queue.get() is not None:  # drain so the producer never blocks
                pass

    def write(self, frames: np.ndarray) -> None:
        """Queue (N, 3, H, W) uint8 RGB frames; blocks while ``max_queued_chunks`` are pending."""
        if self._error is not None:
            raise RuntimeError(f"video encoder failed: {self._error}")
        if frames.ndim != 4 or frames.shape[1] != 3 or tuple(frames.shape[2:]) != tuple(self.size_hw) or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 (N, 3, {self.size_hw[0]}, {self.size_hw[1]}) frames, got {frames.dtype} {frames.shape}")
        self._queue.put(frames.copy())
        self.frames_written += len(frames)

    def close(self, commit: bool = True) -> None:
        self._queue.put(None)
        self._thread.join()
        if commit and self._error is None and self.frames_written > 0:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
            if commit and self._error is not None:
                raise RuntimeError(f"video encoder failed: {self._error}")

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)


class PngSequenceWriter:
    """Numbered PNGs ``frame_000001.png`` ... into a folder; each file is written then renamed."""

    def __init__(self, folder: Path, start: int = 1):
        self.folder = Path(folder)
        check_writable(self.folder / "x")
        self.index = start
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        import cv2

        for frame in frames:
            target = self.folder / f"frame_{self.index:06d}.png"
            tmp = target.with_name(f".{target.name}.part.png")
            if not cv2.imwrite(str(tmp), np.ascontiguousarray(frame.transpose(1, 2, 0)[:, :, ::-1])):
                raise InputError(f"cannot write {target}")
            os.replace(tmp, target)
            self.index += 1
            self.frames_written += 1

    def close(self, commit: bool = True) -> None:
        pass

    def __enter__(self) -> "PngSequenceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
