"""``mimic export``'s command line, kept free of heavy imports so ``mimic --help`` starts fast."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mimic.commands import options as opt

from mimic.commands.conventions import EXPORT_STAGES, in_range

EXPORT_HELP = """Export the model stages to ONNX for TensorRT / onnxruntime.

Writes OUT/<fp32|fp16>/<stage>.onnx and OUT/export_manifest.json. fp16 graphs are strongly typed
(precision lives in the graph: fp16 weights and activations, normalisations in fp32). unet_features
and unet_shallow are the UNet's deep-feature caching pair (the UNet is loaded once for its three
graphs). --validate compares every graph with PyTorch (onnxruntime, CPU) at two shapes per stage and
prints a table."""


app = typer.Typer()


@app.command("export", help=EXPORT_HELP)
def export_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder for the ONNX graphs."),
    weights: opt.Weights = None,
    preset: opt.Preset = None,
    svd: opt.Svd = None,
    checkpoint: opt.Checkpoint = None,
    precision: str = typer.Option("both", "--precision", metavar="fp16|fp32|both", help="Graph precision(s) to write."),
    validate: bool = typer.Option(False, "--validate", help="Compare each graph with PyTorch and print a table."),
    stage: Optional[list[str]] = typer.Option(None, "--stage", metavar="STAGE", help=f"Only these stages (repeatable; default: all): {', '.join(EXPORT_STAGES)}."),
    opset: Optional[int] = typer.Option(None, "--opset", help=f"ONNX opset (default 20). {in_range(18, 20)}"),
) -> None:
    from mimic.export.exporter import export_weight_set
    from mimic.export.onnx_export import DEFAULT_OPSET

    export_weight_set(out, preset=preset, weights=weights, svd=svd, checkpoint=checkpoint, precision=precision, validate=validate,
                   stages=stage or None, opset=opset if opset is not None else DEFAULT_OPSET)
