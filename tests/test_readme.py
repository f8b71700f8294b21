"""Every Python code block of the README runs as written (in a folder holding the files it names)."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import pytest

from _runtime_helpers import write_synthetic_driving_video
from mimic.runtime.demo_assets import synthetic_reference

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(python_blocks()) >= 1


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, tiny_cache, tmp_path, monkeypatch):
    """The code runs unchanged; only the tiny preset's defaults shrink (2 steps, 128 px) for speed."""
    from mimic.mimicmotion_ref import presets

    quick = presets.TINY_GENERATION.with_overrides(steps=2, resolution=128, window=6, overlap=2)
    monkeypatch.setattr(presets, "TINY_GENERATION", quick)
    monkeypatch.chdir(tmp_path)
    for name in ("a.png", "b.png", "person.png"):
        cv2.imwrite(name, synthetic_reference(400, 224)[:, :, ::-1])
    write_synthetic_driving_video(tmp_path / "dance.mp4", 6, (320, 192), fps=24.0)
    code = python_blocks()[index]
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})
    if "render(" in code:  # an example that renders leaves videos beside the inputs
        outputs = [p for p in tmp_path.glob("*.mp4") if p.name != "dance.mp4"]
        assert outputs and all(p.stat().st_size > 0 for p in outputs)
