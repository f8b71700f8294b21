"""The ``mimic`` command line: one Typer app assembled from the command modules in ``commands/``.

Follow a command from here: ``mimic run`` is ``commands/run.py``, which validates the jobs, loads
the backend once and renders every job with ``mimic.runtime.pipeline.generate``.

User errors (subclasses of :class:`mimic.errors.MimicError`) print one line and exit with the
error's code; anything else is a bug and keeps its traceback. Command modules import only typer
at start-up (their work is imported when they run), so ``mimic --help`` stays fast; a command
module that fails to import fails loudly.
"""
from __future__ import annotations

import sys

import typer

from mimic.commands import bench, demo, engines, export, pose, run
from mimic.errors import MimicError
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


for _commands in (demo.app, run.app, pose.app, export.app, engines.app, bench.app):
    app.add_typer(_commands)


def main(argv: list[str] | None = None) -> None:
    """Entry point: typer handles usage errors (exit 2); user errors become one line."""
    setup_cli_logging()
    try:
        app(args=argv)
    except MimicError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
