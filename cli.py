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
from typer._click.exceptions import ClickException, UsageError  # typer >= 0.26 vendors click here (no public alias)

from mimic.commands import bench, demo, engines, export, farm, pose, quantize, run
from mimic.commands.cli_help import MimicGroup
from mimic.errors import ExitCode, Interrupted, MimicError
from mimic.logs import end_progress_line, setup_cli_logging

app = typer.Typer(
    name="mimic",
    cls=MimicGroup,  # every command's help: flags as flags, VIDEO in usage lines (commands/cli_help.py)
    help="MimicMotion inference engine: pose-guided human video generation (SVD img2vid-xt 1.1), TensorRT-accelerated.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mimic {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
) -> None:
    """MimicMotion inference engine."""


for _commands in (demo.app, run.app, pose.app, export.app, quantize.app, engines.app, bench.app, farm.app):
    app.add_typer(_commands)


def _interrupt(signum, frame) -> None:
    name = signal.Signals(signum).name
    raise Interrupted(name, ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors (typer's checks) and user errors become one line (exit 2 for usage); Ctrl-C and
    SIGTERM unwind (temporary files are removed, earlier outputs stay intact) and print one line;
    anything else is a bug: its traceback, then a line asking to report it."""
    setup_cli_logging()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = app(args=argv, prog_name="mimic", standalone_mode=False)
        if isinstance(code, int) and code:  # `--help`/`--version` and their kind return 0 or None
            sys.exit(code)
    except UsageError as err:  # typer/click's own checks (types, ranges, unknown options): one line too
        sys.stdout.flush()
        end_progress_line()
        where = f"mimic {err.ctx.command_path.split(' ', 1)[1]} --help" if err.ctx and " " in err.ctx.command_path else "mimic --help"
        typer.echo(f"error: {' '.join(err.format_message().split())} (see `{where}`)", err=True)
        sys.exit(ExitCode.BAD_INPUT)
    except ClickException as err:  # other click errors (e.g. a file argument it opens itself)
        end_progress_line()
        typer.echo(f"error: {' '.join(err.format_message().split())}", err=True)
        sys.exit(err.exit_code or ExitCode.FAILED)
    except typer.Abort:
        typer.echo("interrupted (SIGINT): temporary files removed, earlier outputs left as they were", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except MimicError as err:
        sys.stdout.flush()
        end_progress_line()  # the error starts on its own line, never after a progress bar
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except (Interrupted, KeyboardInterrupt) as err:
        sys.stdout.flush()
        end_progress_line()
        name, code = (err.signal_name, err.exit_code) if isinstance(err, Interrupted) else ("SIGINT", ExitCode.INTERRUPTED)
        typer.echo(f"interrupted ({name}): temporary files removed, earlier outputs left as they were", err=True)
        sys.exit(code)
    except Exception:
        end_progress_line()
        traceback.print_exc()
        typer.echo(f"internal error: this is a bug in mimic {_version()}; please report it with the traceback above", err=True)
        sys.exit(ExitCode.INTERNAL)
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
