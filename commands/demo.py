"""``mimic demo``: the whole pipeline on an embedded model (the trained toy by default) with built-in inputs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mimic.commands.conventions import DEMO_BACKENDS, DEMO_PRESETS, choices

app = typer.Typer()


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), help="Folder for demo.mp4, preview.png and scores.json."),
    frames: int = typer.Option(24, min=1, help="Number of output frames."),
    steps: Optional[int] = typer.Option(None, min=1, help="Denoising steps (toy default: 10, tiny: 8)."),
    seed: int = typer.Option(42, help="Random seed."),
    backend: str = typer.Option("onnxruntime", metavar=choices(DEMO_BACKENDS), help="Backend (both run on the CPU)."),
    preset: str = typer.Option("toy", metavar=choices(DEMO_PRESETS),
                               help="toy: trained on puppets, renders the dance; tiny: random weights, noise-like output."),
    inputs_only: bool = typer.Option(False, "--inputs-only", help="Only write the held-out puppet as a user's inputs (puppet-ref.png, "
                                     "puppet-dance.mp4 and its poses puppet-dance.npz, for `mimic run --pose`); render nothing."),
) -> None:
    """Render a held-out puppet following a held-out dance with the embedded toy model; writes the
    video, a labelled preview (pose | output | ground truth) and the scores against the ground truth,
    beside a baseline: the reference image held still, scored the same way."""
    from mimic.errors import InputError
    from mimic.runtime.demo import run_demo, write_demo_inputs

    if preset not in DEMO_PRESETS:
        raise InputError(f"--preset must be one of {', '.join(DEMO_PRESETS)}, got {preset!r}")
    if backend not in DEMO_BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(DEMO_BACKENDS)}, got {backend!r}")
    if inputs_only:
        write_demo_inputs(out, frames=frames, preset=preset)
        return
    run_demo(out, frames=frames, steps=steps, seed=seed, backend=backend, preset=preset)
