"""``mimic quantize``: the UNet in 8 bits (FP8 or INT8, NVIDIA Model Optimizer), calibrated on real
denoising jobs, saved, exported as Q/DQ ONNX and validated.

    mimic quantize (--preset toy|tiny | --weights DIR) --precision fp8|int8 --out DIR [--jobs FILE] ...

Writes ``DIR/<precision>/``: ``unet_quant.pt`` (ModelOpt's state + the calibrated quantizer scales),
``quant_manifest.json`` (precision, recipe and its differences from NVIDIA's SVD recipe, calibration
set, versions, the graphs and their validation), ``unet.onnx`` (the Q/DQ engine graph, fp16 body:
what ``mimic build-engines --precision`` builds) and, unless ``--no-validate``, ``unet_fp32.onnx``
(fp32 body, the one each Q/DQ pair is checked on). Typer only at import (``mimic --help`` stays fast).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer

from mimic.commands import options as opt
from mimic.commands.conventions import DEVICE_HELP, DEVICE_METAVAR, in_range

QUANTIZE_HELP = """Quantize the UNet to FP8 or INT8 (NVIDIA Model Optimizer) and export it as Q/DQ ONNX.

Calibrated on the UNet calls of whole denoising jobs: the toy preset's puppet dances by default, or
the jobs of --jobs FILE. Starts from NVIDIA's FP8 SVD UNet recipe (Linear and Conv2d, per-tensor
scales, max calibration, time embeddings / conv_in / conv_out / shortcuts / proj_out kept in 16 bits)
and also quantizes the temporal Conv3d layers (--no-conv3d: NVIDIA's choice). Writes
OUT/<precision>/: ModelOpt state, quant_manifest.json and unet.onnx (the strongly typed engine graph:
fp16 with 8-bit Q/DQ), validated against the fake-quantized model. Needs the `quant` extra: pip install 'mimic-engine\\[quant]'."""

app = typer.Typer()


@app.command("quantize", help=QUANTIZE_HELP)
def quantize_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder (OUT/<precision>/ is written)."),
    precision: str = typer.Option(..., "--precision", metavar="fp8|int8",
                                  help="8-bit format: fp8 (E4M3; GPUs of compute capability 8.9+) or int8. The fp16 and fp32 graphs come from `mimic export`."),
    weights: opt.Weights = None,
    preset: opt.Preset = None,
    svd: opt.Svd = None,
    checkpoint: opt.Checkpoint = None,
    jobs: Optional[Path] = typer.Option(None, "--jobs", help="Calibrate on the jobs of this jobs file (default: toy puppet dances)."),
    samples: int = typer.Option(4, "--samples", min=1, help=f"Toy dances to calibrate on (without --jobs). {in_range(1)}"),
    frames: Optional[int] = typer.Option(None, "--frames", min=1, help=f"Driving frames per toy dance (default: two windows' worth). {in_range(1)}"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help=f"Denoising steps per calibration job (default: the preset's or the job's). {in_range(1)}"),
    no_conv3d: bool = typer.Option(False, "--no-conv3d", help="Leave the temporal Conv3d layers in 16 bits (NVIDIA's SVD choice)."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the fp32-body graph and the validation against fake quantization."),
    device: str = typer.Option("cpu", "--device", metavar=DEVICE_METAVAR, help=DEVICE_HELP + " Calibration runs there."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=f"CPU threads for torch. {in_range(1)}"),
) -> None:
    run_quantize(out, precision, preset=preset, weights=weights, svd=svd, checkpoint=checkpoint, jobs=jobs, samples=samples, frames=frames,
                 steps=steps, conv3d=not no_conv3d, validate=not no_validate, device=device, threads=threads, echo=typer.echo)


def run_quantize(out: Path, precision: str, *, preset: str | None = None, weights: Path | None = None, svd: str | None = None,
                 checkpoint: Path | None = None, jobs: Path | None = None, samples: int = 4, frames: int | None = None, steps: int | None = None,
                 conv3d: bool = True, validate: bool = True, device: str = "cpu", threads: int | None = None,
                 echo: Callable[[str], None] = print) -> dict:
    """The command's work (tests call it in-process). Every option is checked before any model loads."""
    import json
    import time

    from mimic.commands.conventions import check_device
    from mimic.errors import InputError
    from mimic.model.quantize import MANIFEST_FILE, NVIDIA_LAYER_TYPES, QuantRecipe, check_precision, default_recipe, load_modelopt, save_quantized

    t0 = time.perf_counter()
    check_precision(precision)
    check_device(device)
    if jobs is not None and not Path(jobs).is_file():
        raise InputError(f"--jobs {jobs}: no such file")
    from mimic.benchmarks.quant_sensitivity import CALIBRATION_SEEDS, CalibrationSet
    from mimic.toy.samples import HELD_OUT_BASE

    seeds = tuple(CALIBRATION_SEEDS[i] if i < len(CALIBRATION_SEEDS) else HELD_OUT_BASE + 200 + i for i in range(samples))
    calib = CalibrationSet(seeds=() if jobs is not None else seeds, frames=frames, steps=steps, jobs_file=jobs)
    recipe = default_recipe(precision) if conv3d else QuantRecipe(precision, layer_types=NVIDIA_LAYER_TYPES)
    load_modelopt()  # the install line (ExportError) before anything loads
    from mimic.export.exporter import check_output_dir, resolve_layout

    qdir = check_output_dir(Path(out)) / precision
    layout = resolve_layout(preset, weights, None, svd=svd, checkpoint=checkpoint)

    from mimic.export.qdq import export_qdq_unet, validate_qdq
    from mimic.model.presets import default_generation
    from mimic.runtime.api import MimicMotion, RuntimeOptions
    from mimic.benchmarks.quant_sensitivity import quantize_backend_unet

    echo(f"mimic quantize: {preset or weights} UNet -> {precision}, calibrated on "
         f"{'the jobs of ' + str(jobs) if jobs else f'{len(seeds)} toy dance(s)'} ({device}); writing {qdir}")
    mm = MimicMotion(layout, RuntimeOptions(backend="torch", device=device, precision="fp32", threads=threads), default_generation(preset))
    try:
        calib = calib.resolved(mm.base_config)
        summary = quantize_backend_unet(mm, recipe, calib, echo)
        unet = mm.backend.models.unet.to("cpu").eval()
        weights_id = _weights_identity(layout, preset)
        calibration = {**calib.describe(), "device": device, "seconds": round(summary.seconds, 1)}
        path = save_quantized(unet, qdir, recipe, summary, calibration=calibration, weights=weights_id)
        echo(f"saved {qdir / 'unet_quant.pt'} and {path.name}")
        graphs: dict = {}
        bodies = ("fp16", "fp32") if validate else ("fp16",)
        for body in bodies:
            result = export_qdq_unet(unet, Path(out), precision, body=body)
            graph = {**result.to_dict(relative_to=qdir), "body": body}
            if validate:
                check = validate_qdq(result.path, unet, precision, body)
                graph["validation"] = check.to_dict()
                echo(f"  validation vs fake quantization: {check.summary()}")
            graphs[body] = graph
        manifest = json.loads(path.read_text())
        manifest["onnx"] = graphs
        from mimic.files import atomic_write_text

        atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    finally:
        mm.close()
    failed = [b for b, g in graphs.items() if g.get("validation") and not g["validation"]["passed"]]
    if failed:
        from mimic.errors import ExportError

        raise ExportError(f"the {precision} Q/DQ graph ({', '.join(failed)} body) does not match the fake-quantized UNet; "
                          f"see {qdir / MANIFEST_FILE}")
    echo(f"done in {time.perf_counter() - t0:.1f} s; the engine graph (fp16 body + {precision} Q/DQ) is {qdir / 'unet.onnx'}")
    return manifest


def _weights_identity(layout, preset: str | None) -> dict:
    """Which weights were quantized (no absolute paths): the preset, or the checkpoint's name and hash."""
    from mimic.export.freshness import sha256_file

    ident = {"preset": preset, "checkpoint": Path(layout.checkpoint).name}
    ident["checkpoint_sha256"] = sha256_file(layout.checkpoint)
    return ident
