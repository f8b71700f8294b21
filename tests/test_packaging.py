"""The installed package is one namespace, `mimic`, with the `mimic` console script."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build_dir = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, cwd=build_dir, capture_output=True,
    )
    (path,) = out.glob("mimic_engine-*.whl")
    return path


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
    assert set(group.list_commands(ctx)) == {"demo", "run", "pose", "export", "build-engines", "validate", "refit-unet", "bench", "farm"}


def test_bench_has_its_report_subcommand():
    group, ctx = _group()
    assert set(group.get_command(ctx, "bench").list_commands(ctx)) == {"report", "quality", "workers"}


def test_farm_has_its_openjd_template_subcommand():
    group, ctx = _group()
    assert set(group.get_command(ctx, "farm").list_commands(ctx)) == {"openjd-template"}
