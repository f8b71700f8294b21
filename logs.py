"""Logging for the engine: modules log with ``logging.getLogger(__name__)``; the CLI (or an
embedding application) decides where it goes.

``setup_cli_logging()`` is what ``mimic`` uses: INFO and WARNING from the ``mimic`` loggers as plain
lines on stdout (warnings prefixed ``warning:``), ERROR and above on stderr. The
handler looks ``sys.stdout`` up on every record, so redirections made after set-up (pytest's
capture, a caller's ``contextlib.redirect_stdout``) still see the lines.
"""
from __future__ import annotations

import logging
import sys

ROOT = "mimic"


class _StdoutHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            stream = sys.stderr if record.levelno >= logging.ERROR else sys.stdout
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


def setup_cli_logging(verbose: bool = False) -> None:
    """Idempotent: installs one stdout handler on the ``mimic`` logger."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(_PlainFormatter())
        logger.addHandler(handler)
