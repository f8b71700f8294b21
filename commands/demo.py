"""``mimic demo``: the whole pipeline on an embedded model (the trained toy by default) with built-in inputs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer()


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), help="Folder for demo.mp4 and preview.png."),
    frames: int = typer.Option(24, min=1, help="Number of output frames."),
    steps: Optional[int] = typer.Option(None, min=1, help="Denoising steps (toy default: 10, tiny: 8)."),
    seed: int = typer.Option(42, help="Random seed."),
    backend: str = typer.Option("onnxruntime", help="torch | onnxruntime."),
    preset: str = typer.Option("toy", help="toy (trained on puppets: renders the dance) | tiny (random weights)."),
) -> None:
    """Render a held-out puppet following a held-out dance with the embedded toy model; writes the
    video, a labelled preview (pose | output | ground truth) and the scores against the ground truth."""
    from mimic.errors import InputError
    from mimic.runtime.demo import run_demo

    if preset not in ("toy", "tiny"):
        raise InputError(f"--preset must be toy or tiny, got {preset!r}")
    run_demo(out, frames=frames, steps=steps, seed=seed, backend=backend, preset=preset)
