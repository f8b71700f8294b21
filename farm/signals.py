"""Ctrl-C and SIGTERM with Ray in this process: our handlers decide the exit code, never Ray's.

``ray.init`` installs its own SIGTERM handler in the driver (``sys.exit(15)``) and its C++ core a
signal handler that dumps a stack and aborts (exit 134); ``restore`` puts back the handlers that were
there before (the CLI's: ``Interrupted`` -> one line, exit 130/143). A handler that raises inside a
Ray call surfaces wrapped (``SystemError: <cyfunction CoreWorker.wait ...> returned a result with an
exception set``); ``as_interrupt`` finds the interrupt under it. ``held`` lets cleanup (cancelling
jobs, writing the report, stopping the cluster) run to its end: a signal meanwhile is delivered
after it, unless an interrupt is already unwinding (the first one decides the exit code).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

from mimic.errors import ExitCode, Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def current_handlers() -> dict:
    """The Python handlers of SIGINT and SIGTERM now (empty outside the main thread)."""
    return {sig: signal.getsignal(sig) for sig in SIGNALS} if _main_thread() else {}


def restore(handlers: dict) -> None:
    """Install ``handlers`` again; ``signal.signal`` also replaces a C-level handler put there since."""
    for sig, handler in handlers.items():
        if handler is not None:  # None: installed outside Python, nothing of ours to put back
            signal.signal(sig, handler)


def as_interrupt(err: BaseException) -> BaseException | None:
    """The interrupt ``err`` is or wraps (``Interrupted``, ``KeyboardInterrupt``, Ray's ``sys.exit(15)``
    from its SIGTERM handler), else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (Interrupted, KeyboardInterrupt)):
            return err
        if isinstance(err, SystemExit) and err.code == signal.SIGTERM:
            return Interrupted("SIGTERM", ExitCode.TERMINATED)
        err = err.__cause__ or err.__context__
    return None


def reraise(err: BaseException):
    """Raise the interrupt under ``err`` (unwrapped) when there is one, else ``err`` itself."""
    interrupt = as_interrupt(err)
    if interrupt is None or interrupt is err:
        raise err
    raise interrupt from None


@contextlib.contextmanager
def held():
    """Within: SIGINT and SIGTERM are recorded, not raised. After: the previous handlers are back,
    and the first recorded signal is delivered to them, unless an exception is already unwinding."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: handler for sig, handler in current_handlers().items() if handler is not None}  # None: not ours to swap
    restore({sig: lambda signum, frame: caught.append(signum) for sig in previous})
    try:
        yield
    finally:
        restore(previous)
        if caught and sys.exc_info()[0] is None:
            signal.raise_signal(caught[0])
