"""The installed package is one namespace, `mimic`, with the `mimic` console script."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# What a fresh checkout has not: earlier builds (build/lib keeps every file it ever held, and a wheel
# packs all of it), the environment, caches and outputs.
NOT_SOURCES = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".whl", "demo-out", "gpu-check", "dist")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One wheel build of the sources as a fresh checkout has them (as `pip install .` builds it):
    (the wheel, what the build printed)."""
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src") / "mimic"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True, cwd=out, capture_output=True, text=True,
    )
    (path,) = out.glob("mimic_engine-*.whl")
    return path, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(built):
    return built[0]


def test_the_build_prints_no_setuptools_banner_and_ships_the_toy_weights(built):
    """Folders under toy/weights (SVD/, ...) are data, not packages: setuptools must not take them
    for packages missing from `packages` (a "Package would be ignored" banner per folder), and every
    toy weight file is still in the wheel."""
    path, output = built
    for banner in ("Package would be ignored", "_Warning", "is absent from the `packages` configuration"):
        assert banner not in output, output
    names = set(zipfile.ZipFile(path).namelist())
    weights = [p for p in (ROOT / "toy" / "weights").rglob("*") if p.is_file()]
    assert any(p.name == "MimicMotion_1-1.pth" for p in weights) and any(p.suffix == ".safetensors" for p in weights)
    missing = [str(p.relative_to(ROOT)) for p in weights if f"mimic/{p.relative_to(ROOT).as_posix()}" not in names]
    assert not missing, missing
    assert {"mimic/toy/train_log.csv", "mimic/toy/train_summary.json"} <= names


def test_wheel_exposes_only_the_mimic_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"mimic", next(t for t in top if t.endswith(".dist-info"))}
    for sub in ("mimic/runtime/api.py", "mimic/runtime/pipeline.py", "mimic/engine/store.py", "mimic/spec.py", "mimic/files.py", "mimic/media/video_writer.py",
                "mimic/pose/detector.py", "mimic/mimicmotion_ref/pipeline.py", "mimic/cli.py", "mimic/commands/run.py", "mimic/benchmarks/__init__.py"):
        assert sub in names
    assert not any(n.startswith("mimic/tests/") for n in names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "mimic = mimic.cli:main" in entry


def _group():
    """The ``mimic`` command group and a context for it: what the CLI really dispatches (not
    substrings of its help text)."""
    import typer.main

    from mimic.cli import app

    group = typer.main.get_command(app)
    return group, group.make_context("mimic", [], resilient_parsing=True)


def test_the_cli_registers_every_command():
    group, ctx = _group()
    assert set(group.list_commands(ctx)) == {"demo", "run", "pose", "export", "build-engines", "validate", "refit-unet", "bench", "farm", "quantize"}


def test_bench_has_its_report_subcommand():
    group, ctx = _group()
    assert set(group.get_command(ctx, "bench").list_commands(ctx)) == {"report", "quality", "workers"}


def test_farm_has_its_openjd_template_subcommand():
    group, ctx = _group()
    assert set(group.get_command(ctx, "farm").list_commands(ctx)) == {"openjd-template"}
