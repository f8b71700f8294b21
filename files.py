"""Small shared file helpers: the one atomic-write convention and the one lock.

Every file the engine publishes (videos, PNG frames, reports, pose files, manifests, engines,
ONNX graphs, caches) is written to a temporary name in the *same folder*, fsynced and renamed
over the target, so a reader never sees half a file and an interrupted write leaves the previous
file intact. Temporary names are derived from the target's name (``.NAME.PID.part.EXT``), so they
are recognisable, unique per process, and keep the extension (encoders pick formats by it).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

_CHUNK = 64 << 20


def _file_mode() -> int:
    """0o666 minus the process umask (what a plain ``open(..., "w")`` would give)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def temp_path(path: Path | str) -> Path:
    """The temporary sibling used while ``path`` is being written."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")


def fsync_dir(path: Path | str) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path | str, path: Path | str) -> None:
    """fsync ``tmp``, rename it over ``path`` and make the rename durable."""
    if Path(tmp).is_file():
        fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def remove_quietly(path: Path | str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_output(path: Path | str) -> Iterator[Path]:
    """``with atomic_output(p) as tmp:`` write ``tmp`` (any way you like); on a clean exit it is
    fsynced and renamed to ``p``; on any exception it is removed and ``p`` is left untouched."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def atomic_write_bytes(path: Path | str, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            view = memoryview(data).cast("B")
            for start in range(0, len(view), _CHUNK):
                f.write(view[start : start + _CHUNK])


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_lock(path: Path | str, timeout_s: float = -1):
    """An inter-process lock on ``path`` (a ``filelock.FileLock``; use as a context manager)."""
    from filelock import FileLock

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=timeout_s)
