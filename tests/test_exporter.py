"""`mimic export`: the command through typer, its progress output and its bad-input errors."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from _export_fixtures import BASE_STAGES, tiny_export  # noqa: F401  (session fixture)
from mimic.commands import export as export_commands
from mimic.errors import ExportError, InputError, WeightsError
from mimic.export import exporter
from mimic.export.exporter import export_weight_set
from mimic.logs import setup_cli_logging


@pytest.fixture()
def app() -> typer.Typer:
    setup_cli_logging()  # what `mimic` does: progress lines on stdout
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    app.add_typer(export_commands.app)
    return app


def test_full_tiny_export_writes_every_stage_and_the_table(tiny_export):
    """`export_weight_set(preset tiny, both, validate)`: every (base) stage in fp32 and fp16, table within tolerance."""
    got = {(r.stage, r.precision) for r in tiny_export.summary.results}
    assert got == {(s, p) for s in BASE_STAGES for p in ("fp32", "fp16")}
    assert tiny_export.summary.passed
    log = "\n".join(tiny_export.log)
    assert "stage" in log and "max abs" in log and "FAIL" not in log
    for stage in BASE_STAGES:
        assert f"{stage}: export fp16" in log and f"{stage}: validate fp32" in log


def test_cli_exports_a_stage_with_progress_and_table(app, tiny_layout, tmp_path):
    out = tmp_path / "onnx"
    res = CliRunner().invoke(app, ["export", "--preset", "tiny", "--out", str(out), "--stage", "pose_net", "--validate"])
    assert res.exit_code == 0, res.output
    assert (out / "fp32" / "pose_net.onnx").is_file() and (out / "fp16" / "pose_net.onnx").is_file()
    assert not (out / "fp32" / "unet.onnx").exists()
    assert "pose_net: export fp32" in res.output and "pose_net: export fp16" in res.output
    assert "max rel" in res.output and "pass" in res.output
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert set(manifest["stages"]) == {"pose_net"}
    # a second partial export into the same folder is merged into the manifest
    res = CliRunner().invoke(app, ["export", "--preset", "tiny", "--out", str(out), "--stage", "image_encoder", "--precision", "fp16"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert set(manifest["stages"]) == {"pose_net", "image_encoder"} and set(manifest["stages"]["image_encoder"]) == {"fp16"}


def test_real_cli_entry_point_maps_errors_to_one_line(tiny_layout, tmp_path, capsys):
    from mimic.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["export", "--preset", "tiny", "--out", str(tmp_path / "o"), "--precision", "int8"])
    assert exit_.value.code == InputError.exit_code
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown precision 'int8'; use fp16, fp32 or both"


def test_unknown_precision(app, tmp_path):
    res = CliRunner().invoke(app, ["export", "--preset", "tiny", "--out", str(tmp_path), "--precision", "fp8"])
    assert isinstance(res.exception, InputError) and "fp16, fp32 or both" in str(res.exception)


def test_unknown_or_shipped_stage(tmp_path):
    with pytest.raises(InputError, match="unknown stage 'clip'"):
        export_weight_set(tmp_path, preset="tiny", stages=["clip"])
    with pytest.raises(InputError, match="ships as ONNX"):
        export_weight_set(tmp_path, preset="tiny", stages=["dwpose_pose"])


def _no_work(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("work started before the inputs were checked")

    monkeypatch.setattr(exporter, "_load_group", boom)
    monkeypatch.setattr(exporter, "resolve_layout", boom)


def test_unwritable_output_dir_fails_before_any_work(tmp_path, monkeypatch):
    _no_work(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="exists and is not a directory"):
        export_weight_set(blocker, preset="tiny")
    with pytest.raises(InputError, match="is not writable"):
        export_weight_set(blocker / "sub", preset="tiny")
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(InputError, match="is not writable"):
                export_weight_set(ro, preset="tiny")
        finally:
            ro.chmod(0o700)


def _weights_without(tiny_layout, tmp_path: Path, drop: str) -> Path:
    """A copy of the tiny weights in the upstream layout, minus one SVD subfolder."""
    root = tmp_path / "weights"
    svd_src = Path(tiny_layout.svd)
    svd_dst = root / "SVD" / svd_src.name
    shutil.copytree(svd_src, svd_dst)
    shutil.rmtree(svd_dst / drop)
    shutil.copy(tiny_layout.checkpoint, root / Path(tiny_layout.checkpoint).name)
    return root


def test_weights_dir_missing_a_stage(tiny_layout, tmp_path, monkeypatch):
    weights = _weights_without(tiny_layout, tmp_path, "vae")
    monkeypatch.setattr(exporter, "_load_group", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    with pytest.raises(WeightsError) as err:
        export_weight_set(tmp_path / "out", weights=weights)
    msg = str(err.value)
    assert "\n" not in msg and "missing vae/" in msg and "vae_encoder, vae_decoder" in msg
    # the model info (the one strict reader of the model dims) needs every config: one line naming it
    with pytest.raises(WeightsError, match="missing vae/config.json"):
        export_weight_set(tmp_path / "out", weights=weights, stages=["pose_net"], precision="fp32")


def test_missing_weights_dir_and_checkpoint(tiny_layout, tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        export_weight_set(tmp_path / "out", weights=tmp_path / "nowhere")
    weights = _weights_without(tiny_layout, tmp_path, "feature_extractor")
    (weights / Path(tiny_layout.checkpoint).name).unlink()
    with pytest.raises(WeightsError, match="MimicMotion checkpoint .*needed by pose_net, unet"):
        export_weight_set(tmp_path / "out", weights=weights)
    weights2 = _weights_without(tiny_layout, tmp_path / "w2", "feature_extractor")
    for f in (weights2 / "SVD").rglob("image_encoder/*.safetensors"):
        f.unlink()
    with pytest.raises(WeightsError, match=r"missing image_encoder/ \(config.json \+ model\[.fp16\].safetensors\) \(needed by image_encoder\)"):
        export_weight_set(tmp_path / "out", weights=weights2)
    with pytest.raises(InputError, match="not both"):
        export_weight_set(tmp_path / "out", weights=weights, preset="tiny")


def test_failed_validation_raises_after_writing(tiny_layout, tmp_path, monkeypatch, caplog):
    from dataclasses import replace

    from mimic import spec

    strict = replace(spec.STAGES["pose_net"], tol_fp32=spec.Tolerance(1e-12, 1e-12))
    monkeypatch.setattr(exporter, "STAGES", {**spec.STAGES, "pose_net": strict})
    caplog.set_level(logging.INFO, logger="mimic")
    with pytest.raises(ExportError, match="validation failed for pose_net fp32"):
        export_weight_set(tmp_path / "out", layout=tiny_layout, stages=["pose_net"], precision="fp32", validate=True)
    assert (tmp_path / "out" / "fp32" / "pose_net.onnx").is_file()
    assert any("FAIL" in line for line in caplog.messages)
