"""The ``mimic`` command line.

User errors (subclasses of :class:`mimic.errors.MimicError`) print one line and exit with the
error's code; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from mimic.errors import MimicError

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


class StageTimer:
    """Prints and records how long each named stage took."""

    def __init__(self, echo=typer.echo):
        self.echo = echo
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, exc_type, exc, tb):
                if exc_type is None:
                    timer.seconds[name] = time.perf_counter() - self.t0
                    timer.echo(f"  {name:<10} {timer.seconds[name]:7.2f} s")

        return _Stage()


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), help="Folder for demo.mp4 and preview.png."),
    frames: int = typer.Option(24, min=1, help="Number of output frames."),
    steps: Optional[int] = typer.Option(None, min=1, help="Denoising steps (tiny default: 8)."),
    seed: int = typer.Option(42, help="Random seed."),
    backend: str = typer.Option("onnxruntime", help="torch | onnxruntime."),
) -> None:
    """Run the whole pipeline on the embedded tiny model with a built-in reference image and dance."""
    from mimic.runtime.demo import run_demo

    run_demo(out, frames=frames, steps=steps, seed=seed, backend=backend, echo=typer.echo, timer=StageTimer())


def _register_optional() -> None:
    """Commands contributed by the packages (each module adds its own typer commands)."""
    import importlib

    for module in ("mimic.export.cli_command", "mimic.engine.command", "mimic.runtime.command", "mimic.runtime.pose_cli", "mimic.benchmarks.command"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a real missing dependency inside the module: surface it
                raise
            continue
        mod.register(app)


_register_optional()


def main(argv: list[str] | None = None) -> None:
    """Entry point: typer handles usage errors (exit 2); user errors become one line."""
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
