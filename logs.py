"""Logging for the engine: modules log with ``logging.getLogger(__name__)``; the CLI (or an
embedding application) decides where it goes.

``setup_cli_logging()`` is what ``mimic`` uses: the ``mimic`` loggers' lines, plain, with INFO (and
DEBUG, with ``verbose=True``) on stdout and WARNING (prefixed ``warning:``), ERROR and above on
stderr, so ``mimic ... > log`` keeps what went wrong on the terminal. A command whose stdout is
data (``mimic pose`` prints a JSON summary for ``| jq``) calls ``info_to_stderr()``: then every line
goes to stderr and stdout holds only what the command prints itself; the next
``setup_cli_logging()`` (each ``mimic.cli.main``) puts INFO back on stdout. The handler looks
``sys.stdout``/``sys.stderr`` up on every record, so redirections made after set-up (pytest's
capture, a caller's ``contextlib.redirect_stdout``) still see the lines.

Two things keep the output clean:

* third-party warnings that tell the user nothing (``THIRD_PARTY_NOISE``, e.g. diffusers' "modules
  ... should be kept in float32: []" on every ``.to(dtype)``) are re-logged at DEBUG on
  ``mimic.third_party`` (shown with ``verbose=True``) instead of printed;
* a progress bar (``mimic.runtime.progress``, on stderr) leaves its line open; every line written
  here, on either stream, and the CLI's error line, first ends it (``end_progress_line``), so no
  line (a warning, an error, an INFO line on the same terminal) ever continues a bar.
"""
from __future__ import annotations

import logging
import sys
import threading

ROOT = "mimic"
# (logger that emits it, text it contains): warnings re-logged at DEBUG instead of printed.
THIRD_PARTY_NOISE = (
    ("diffusers.models.modeling_utils", "should be kept in float32"),
)
_open_lines: dict[int, object] = {}  # id(stream) -> stream holding an unfinished progress line
_open_lock = threading.Lock()


def progress_line_open(stream, is_open: bool) -> None:
    """A progress bar on ``stream`` has (True) or no longer has (False) an unfinished line."""
    with _open_lock:
        if is_open:
            _open_lines[id(stream)] = stream
        else:
            _open_lines.pop(id(stream), None)


def end_progress_line() -> None:
    """End any unfinished progress line, so what is written next starts on a line of its own."""
    with _open_lock:
        streams = list(_open_lines.values())
        _open_lines.clear()
    for stream in streams:
        try:
            stream.write("\n")
            stream.flush()
        except (OSError, ValueError):  # pragma: no cover - a closed stream has no line to end
            pass


class _Demote(logging.Filter):
    """Drops ``text`` warnings of one third-party logger after re-logging them at DEBUG."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and self.text in record.getMessage():
            logging.getLogger(f"{ROOT}.third_party").debug(f"{record.name}: {record.getMessage()}")
            return False
        return True


class _CliHandler(logging.Handler):
    """Plain lines: below WARNING on stdout (or stderr after ``info_to_stderr()``), WARNING and above on stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.info_on_stderr = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            end_progress_line()
            on_stderr = record.levelno >= logging.WARNING or self.info_on_stderr
            stream = sys.stderr if on_stderr else sys.stdout
            stream.write(msg + "\n")
            stream.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno == logging.WARNING and not msg.startswith(("warning:", "error:")):
            msg = f"warning: {msg}"
        if record.exc_info:
            msg = f"{msg}\n{self.formatException(record.exc_info)}"
        return msg


def _handler() -> _CliHandler | None:
    return next((h for h in logging.getLogger(ROOT).handlers if isinstance(h, _CliHandler)), None)


def setup_cli_logging(verbose: bool = False) -> None:
    """Idempotent: installs one handler on the ``mimic`` logger (INFO on stdout, warnings and errors
    on stderr; an earlier ``info_to_stderr()`` is undone)."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler = _handler()
    if handler is None:
        handler = _CliHandler()
        handler.setFormatter(_PlainFormatter())
        logger.addHandler(handler)
    handler.info_on_stderr = False
    for name, text in THIRD_PARTY_NOISE:
        source = logging.getLogger(name)  # a record is filtered by the logger that creates it
        if not any(isinstance(f, _Demote) and f.text == text for f in source.filters):
            source.addFilter(_Demote(text))


def info_to_stderr() -> None:
    """INFO (and DEBUG) lines go to stderr too, for a command whose stdout is data (``mimic pose``'s
    JSON summary stays parseable with ``| jq``), until the next ``setup_cli_logging()``. Sets the CLI
    logging up first if it is not."""
    if _handler() is None:
        setup_cli_logging()
    _handler().info_on_stderr = True
