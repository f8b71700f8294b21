"""One small error hierarchy for the whole engine.

Everything a user can cause (bad input, missing weights, a stale engine) raises a subclass of
:class:`MimicError`; the CLI prints it as one line and exits with its ``exit_code``. Any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations


class MimicError(Exception):
    """Base of all user-facing errors. ``str(err)`` is the one line shown to the user."""

    exit_code = 1


class InputError(MimicError):
    """A bad image, video, pose file, option value or output path."""

    exit_code = 2


class WeightsError(MimicError):
    """Weights that are missing, incomplete or of the wrong architecture."""

    exit_code = 3


class ExportError(MimicError):
    """An ONNX export or its validation failed."""

    exit_code = 4


class EngineError(MimicError):
    """A TensorRT engine is missing, corrupt, incompatible or out of its profile."""

    exit_code = 5


class NumericsError(MimicError):
    """NaN/Inf appeared in a computation; the job stops instead of writing black frames."""

    exit_code = 6


class OutOfMemoryError(MimicError):
    """The device ran out of memory: lower --resolution, --window or --decode-chunk, or use a bigger
    GPU. Not a bad input: a farm may retry it on another worker."""

    exit_code = 7


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM (raised by the CLI's signal handlers): the run unwinds, temporary files are
    removed, outputs stay as they were. A BaseException, so no ``except Exception`` swallows it."""

    def __init__(self, signal_name: str = "SIGINT", exit_code: int = 130):
        super().__init__(signal_name)
        self.signal_name, self.exit_code = signal_name, exit_code
