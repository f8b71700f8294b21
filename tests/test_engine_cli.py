"""`mimic build-engines` / `mimic validate` end to end on CPU with TensorRT-RTX (ahead-of-time builds).

One full tiny build per module (export of the five base stages to FP16 ONNX + seven engine builds);
every other test works on that folder or on a cheap copy of it. Deep-feature caching's two UNet
engines (in the default stage list) are left out with --stage here: test_cache_graphs.py builds them.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mimic.commands import engines as engine_commands
from mimic.engine.build import hw_sizes, parse_shapes, profile_set_of
from mimic.engine.gpu import gpu_available, trt_info
from mimic.errors import EngineError, InputError, MimicError
from mimic.logs import setup_cli_logging

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (tensorrt-rtx-cu13) is not installed")

ALL = ("image_encoder", "vae_encoder", "pose_net", "unet", "vae_decoder", "dwpose_detector", "dwpose_pose")
STAGE_ARGS = tuple(a for s in ALL for a in ("--stage", s))  # every stage but unet_features / unet_shallow
RTX = trt_info("tensorrt-rtx")


def make_app() -> typer.Typer:
    setup_cli_logging()  # what `mimic` does: progress lines on stdout
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """test app"""

    app.add_typer(engine_commands.app)
    return app


APP = make_app()


def cli(*args: str) -> tuple[int, str]:
    """Invoke like `mimic ...`: a MimicError becomes (its exit code, its one-line message)."""
    result = CliRunner().invoke(APP, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        if isinstance(result.exception, MimicError):
            return result.exception.exit_code, f"{result.output}error: {result.exception}"
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def engines(tiny_cache, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("engines")
    code, output = cli("build-engines", "--preset", "tiny", "--target", "tensorrt-rtx", "--out", str(out), *STAGE_ARGS)
    assert code == 0, output
    return out, output


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock"))
    return dst


def test_first_build_publishes_every_stage(engines):
    out, output = engines
    for stage in ALL:
        m = json.loads((out / f"{stage}.manifest.json").read_text())
        plan = out / f"{stage}.plan"
        assert plan.stat().st_size == m["plan"]["size"] > 0
        assert m["tensorrt"] == {"flavour": "tensorrt-rtx", "version": RTX.version}
        assert m["gpu"]["name"] == "any" and "8.6" in m["gpu"]["compute_capability"]
        assert m["key_inputs"]["build"]["options"]["target"] == "tensorrt-rtx"
        assert m["key_inputs"]["build"]["precision"] == {"onnx": "fp16", "typing": "strong"}
        assert m["onnx"]["precision"] == ("fp32" if stage.startswith("dwpose") else "fp16")
        assert m["build"]["seconds"] >= 0
        assert f"{stage}: built in" in output
    unet = json.loads((out / "unet.manifest.json").read_text())
    assert unet["onnx"]["path"] == "onnx/fp16/unet.onnx"  # relative: the folder can move
    assert set(unet["io"]["inputs"]) == {"sample", "timestep", "encoder_hidden_states", "added_time_ids", "pose_latents"}
    prof = unet["key_inputs"]["build"]["profiles"][0]["sample"]
    assert prof["opt"][1] == prof["max"][1] == 16  # the tiny preset's window
    assert "[4/7] unet" in output and "done: 7 built, 0 up to date" in output


def test_second_run_is_a_no_op(engines):
    out, _ = engines
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.plan")}
    code, output = cli("build-engines", "--preset", "tiny", "--target", "tensorrt-rtx", "--out", str(out), *STAGE_ARGS)
    assert code == 0, output
    assert "are up to date (same weights and export code)" in output
    for stage in ALL:
        assert f"{stage}: up to date" in output
    assert "done: 0 built, 7 up to date" in output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.plan")} == before


def test_changed_option_rebuilds_only_affected_stage(engines, tmp_path):
    out = _copy(engines[0], tmp_path / "e")
    code, output = cli("build-engines", "--preset", "tiny", "--target", "tensorrt-rtx", "--out", str(out), "--stage", "pose_net",
                       "--stage", "dwpose_pose", "--optimization-level", "2")
    assert code == 0, output
    assert "done: 2 built, 0 up to date" in output
    m = json.loads((out / "pose_net.manifest.json").read_text())
    assert m["key_inputs"]["build"]["options"]["optimization_level"] == 2


def test_check_only_passes(engines):
    code, output = cli("validate", "--engines", str(engines[0]), "--check-only")
    assert code == 0, output
    for stage in ALL:
        assert f"  {stage}" in output and "ok" in output


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU message")
def test_validate_without_gpu_is_one_line(engines):
    code, output = cli("validate", "--engines", str(engines[0]))
    assert code == EngineError.exit_code
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: mimic validate (engine execution) needs an NVIDIA GPU")


@pytest.mark.parametrize("mode, expect", [("truncate", "is truncated"), ("flip", "is corrupt (sha256 differs")])
def test_corrupt_engine_is_one_line_error_then_rebuilt(engines, tmp_path, mode, expect):
    out = _copy(engines[0], tmp_path / "e")
    plan = out / "pose_net.plan"
    raw = bytearray(plan.read_bytes())
    if mode == "truncate":
        plan.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        raw[len(raw) // 3] ^= 0x10
        plan.write_bytes(bytes(raw))
    code, output = cli("validate", "--engines", str(out))
    assert code == EngineError.exit_code
    err = output.strip().splitlines()[-1]
    assert expect in err and "pose_net.plan" in err and "rebuild with `mimic build-engines" in err
    # the hint, pasted, carries the folder's build options and rebuilds just that engine (the stage
    # list is this folder's: the hint's default would also build the caching pair it was built without)
    hint = re.search(r"rebuild with `([^`]+)`", err).group(1)
    assert hint.startswith(f"mimic build-engines --out {out} --preset tiny ") and "--target tensorrt-rtx" in hint
    assert "--stage" not in hint
    code, output = cli(*shlex.split(hint)[1:], *STAGE_ARGS)
    assert code == 0, output
    assert "pose_net: built in" in output and "done: 1 built, 6 up to date" in output
    assert cli("validate", "--engines", str(out), "--check-only")[0] == 0


@pytest.mark.parametrize(
    "edit, expect",
    [
        ({"version": "1.6.0.12"}, "TensorRT version differs: 1.6.0.12 vs " + (RTX.version if RTX else "")),
        ({"flavour": "tensorrt", "version": "11.4.0.106"}, "was built with TensorRT 11.4.0.106"),
    ],
)
def test_mismatched_manifest_is_one_line_error(engines, tmp_path, edit, expect):
    out = _copy(engines[0], tmp_path / "e")
    mpath = out / "unet.manifest.json"
    m = json.loads(mpath.read_text())
    m["tensorrt"].update(edit)
    mpath.write_text(json.dumps(m))
    code, output = cli("validate", "--engines", str(out), "--stage", "unet")
    assert code == EngineError.exit_code
    err = output.strip().splitlines()[-1]
    assert expect in err and "engine 'unet'" in err and "rebuild with `mimic build-engines" in err


def test_real_cli_prints_one_line_and_exit_code(engines, tmp_path):
    """Through mimic.cli.main in a fresh process: no traceback, one line on stderr, EngineError's code."""
    out = _copy(engines[0], tmp_path / "e")
    (out / "vae_decoder.plan").write_bytes(b"not an engine")
    proc = subprocess.run([sys.executable, "-c", "from mimic.cli import main; main()", "validate", "--engines", str(out), "--check-only"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EngineError.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "vae_decoder.plan is truncated" in lines[0]


def test_failed_rebuild_keeps_the_published_engine(engines, tmp_path, monkeypatch):
    out = _copy(engines[0], tmp_path / "e")
    import mimic.engine.builder as builder

    def boom(*args, **kwargs):
        raise EngineError("simulated builder failure")

    monkeypatch.setattr(builder, "build_serialized_engine", boom)
    code, output = cli("build-engines", "--preset", "tiny", "--target", "tensorrt-rtx", "--out", str(out), "--stage", "pose_net", "--force")
    assert code == EngineError.exit_code and "simulated builder failure" in output
    monkeypatch.undo()
    assert cli("validate", "--engines", str(out), "--check-only")[0] == 0  # old plan + manifest intact
    assert not list(out.glob(".*.part*"))


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--target", "tensorrt-llm"], "unknown TensorRT target"),
        (["--shapes", "1000x576"], "multiples of 64"),
        (["--shapes", "square"], "unknown shape"),
        (["--window", "1"], "--window must be >= 2"),
        (["--window", "40"], "pose_net: a 40-frame window is outside the supported 1..32 (tiny profile set)"),
        (["--shapes", "1024x576", "--window", "80"], "pose_net: a 80-frame window is outside the supported 1..72 (real profile set)"),
        (["--stage", "text_encoder"], "unknown stage"),
        (["--optimization-level", "7"], "0-5"),
    ],
)
def test_bad_options_fail_before_any_work(tmp_path, args, expect):
    code, output = cli("build-engines", "--preset", "tiny", "--out", str(tmp_path / "x"), *args)
    assert code in (InputError.exit_code, EngineError.exit_code)
    assert expect in output.strip().splitlines()[-1]
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU message")
def test_tensorrt_target_without_gpu(tmp_path):
    code, output = cli("build-engines", "--preset", "tiny", "--out", str(tmp_path / "x"), "--target", "tensorrt")
    assert code == EngineError.exit_code
    msg = output.strip().splitlines()[-1]
    assert "tensorrt" in msg and ("--target tensorrt-rtx" in msg or "cannot be imported" in msg)


def test_shape_options():
    assert parse_shapes(None, "tiny") == ("tiny",)
    assert parse_shapes(None, None) == ("portrait-576", "landscape-576")
    assert parse_shapes("landscape-576, 768x512", None) == ("landscape-576", "768x512")
    assert hw_sizes(("portrait-576", "landscape-576")) == [(1024, 576), (576, 1024)]
    assert hw_sizes(("tiny",)) == [] and profile_set_of(("tiny",)) == "tiny" and profile_set_of(("768x512",)) == "real"


def test_engines_record_one_profile_with_the_window_fixed(engines):
    out, output = engines
    for stage in ALL:
        profiles = json.loads((out / f"{stage}.manifest.json").read_text())["key_inputs"]["build"]["profiles"]
        assert len(profiles) == (0 if stage.startswith("dwpose") else 1)  # static DWPose graphs: none
    pose = json.loads((out / "pose_net.manifest.json").read_text())["key_inputs"]["build"]["profiles"][0]["pose_images"]
    assert pose["min"][0] == pose["opt"][0] == pose["max"][0] == 16
    assert "building from yolox_l.onnx (fp32; images 1x3x640x640)" in output
