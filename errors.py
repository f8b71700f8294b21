"""One small error hierarchy for the whole engine.

Everything a user can cause (bad input, missing weights, a stale engine) raises a subclass of
:class:`MimicError`; the CLI prints it as one line and exits with its ``exit_code``. Any other
exception is a bug and keeps its traceback. Every exit code is declared once, in :class:`ExitCode`.
"""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of ``mimic`` (README: "Bad input, faults and exit codes"); a farm reports the
    same code per job."""

    OK = 0  # every job written
    FAILED = 1  # some jobs of a batch failed, or a user error of no narrower kind
    BAD_INPUT = 2  # bad input, option or output path (typer's own usage errors too)
    WEIGHTS = 3
    EXPORT = 4
    ENGINE = 5
    NUMERICS = 6  # NaN/Inf: the job stops instead of writing black frames
    OUT_OF_MEMORY = 7
    INTERNAL = 70  # EX_SOFTWARE: a bug in mimic, not in the input
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM

    __str__ = int.__repr__  # "70", never "ExitCode.INTERNAL", in text and CSV (Python 3.10 too)


class MimicError(Exception):
    """Base of all user-facing errors. ``str(err)`` is the one line shown to the user."""

    exit_code: int = ExitCode.FAILED


class InputError(MimicError):
    """A bad image, video, pose file, option value or output path."""

    exit_code = ExitCode.BAD_INPUT


class WeightsError(MimicError):
    """Weights that are missing, incomplete or of the wrong architecture."""

    exit_code = ExitCode.WEIGHTS


class ExportError(MimicError):
    """An ONNX export or its validation failed."""

    exit_code = ExitCode.EXPORT


class EngineError(MimicError):
    """A TensorRT engine is missing, corrupt, incompatible or out of its profile."""

    exit_code = ExitCode.ENGINE


class NumericsError(MimicError):
    """NaN/Inf appeared in a computation; the job stops instead of writing black frames."""

    exit_code = ExitCode.NUMERICS


class OutOfMemoryError(MimicError):
    """The device ran out of memory: lower --resolution, --window or --decode-chunk, or use a bigger
    GPU. Not a bad input: a farm may retry it on another worker."""

    exit_code = ExitCode.OUT_OF_MEMORY


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM (raised by the CLI's signal handlers): the run unwinds, temporary files are
    removed, outputs stay as they were. A BaseException, so no ``except Exception`` swallows it."""

    def __init__(self, signal_name: str = "SIGINT", exit_code: int = ExitCode.INTERRUPTED):
        super().__init__(signal_name)
        self.signal_name, self.exit_code = signal_name, exit_code
