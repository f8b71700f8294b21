"""The ``mimic`` command line: one Typer app assembled from the command modules in ``commands/``.

Follow a command from here: ``mimic run`` is ``commands/run.py``, which validates the jobs, loads
the backend once and renders every job with ``mimic.runtime.pipeline.generate``.

User errors (subclasses of :class:`mimic.errors.MimicError`) print one line and exit with the
error's code; anything else is a bug and keeps its traceback. Command modules import only typer
at start-up (their work is imported when they run), so ``mimic --help`` stays fast; a command
module that fails to import fails loudly.
"""
from __future__ import annotations

import signal
import sys
import threading
import traceback

import typer

from mimic.commands import bench, demo, engines, export, farm, pose, run
from mimic.errors import Interrupted, MimicError
from mimic.logs import setup_cli_logging

app = typer.Typer(
    name="mimic",
    help="MimicMotion inference engine: pose-guided human video generation (SVD img2vid-xt 1.1), TensorRT-accelerated.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """MimicMotion inference engine."""


for _commands in (demo.app, run.app, pose.app, export.app, engines.app, bench.app, farm.app):
    app.add_typer(_commands)


INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE: a bug in mimic, not in the input


def _interrupt(signum, frame) -> None:
    name = signal.Signals(signum).name
    raise Interrupted(name, 128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Entry point: typer handles usage errors (exit 2); user errors become one line; Ctrl-C and
    SIGTERM unwind (temporary files are removed, earlier outputs stay intact) and print one line;
    anything else is a bug: its traceback, then a line asking to report it."""
    setup_cli_logging()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        app(args=argv)
    except MimicError as err:
        sys.stdout.flush()
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except (Interrupted, KeyboardInterrupt) as err:
        sys.stdout.flush()
        name, code = (err.signal_name, err.exit_code) if isinstance(err, Interrupted) else ("SIGINT", 130)
        typer.echo(f"interrupted ({name}): temporary files removed, earlier outputs left as they were", err=True)
        sys.exit(code)
    except Exception:
        traceback.print_exc()
        typer.echo(f"internal error: this is a bug in mimic {_version()}; please report it with the traceback above", err=True)
        sys.exit(INTERNAL_ERROR_EXIT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _version() -> str:
    import importlib.metadata as md

    try:
        return md.version("mimic-engine")
    except md.PackageNotFoundError:
        return "(not installed)"


if __name__ == "__main__":
    main()
