"""``mimic demo``: the whole pipeline on the embedded tiny model with built-in inputs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer()


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

    run_demo(out, frames=frames, steps=steps, seed=seed, backend=backend)
