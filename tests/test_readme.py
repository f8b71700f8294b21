"""Every README code block runs in a test or says what it needs: Python blocks run as written (in a folder holding the
files they name); shell blocks are marked, and the runnable ones run."""
from __future__ import annotations

import re
import shlex
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
    import dataclasses

    from mimic.model import presets

    tiny = presets.PRESETS["tiny"]
    quick = tiny.defaults.with_overrides(steps=2, resolution=128, window=6, overlap=2)
    monkeypatch.setitem(presets.PRESETS, "tiny", dataclasses.replace(tiny, defaults=quick))
    monkeypatch.chdir(tmp_path)
    for name in ("a.png", "b.png", "person.png"):
        cv2.imwrite(name, synthetic_reference(400, 224)[:, :, ::-1])
    write_synthetic_driving_video(tmp_path / "dance.mp4", 6, (320, 192), fps=24.0)
    code = python_blocks()[index]
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})
    if "render(" in code:  # an example that renders leaves videos beside the inputs
        outputs = [p for p in tmp_path.glob("*.mp4") if p.name != "dance.mp4"]
        assert outputs and all(p.stat().st_size > 0 for p in outputs)


# --------------------------------------------------------------------------- shell blocks
# Every ```bash block carries a marker on the line before it: `<!-- readme: run ... -->` (this file runs each of its
# commands: `mimic ...` in-process through the real entry point, `make X` as `make -n X`), or
# `<!-- readme: needs ... -->` naming what it needs that a test machine does not have. Other blocks say what
# they are (`<!-- readme: not a command ... -->`).
NEEDS = ("real weights", "GPU", "Ray cluster", "OpenCue")


def shell_blocks() -> list[tuple[str | None, str, int]]:
    """(marker or None, block text, line number) of every fenced block that is not Python."""
    lines = README.read_text().splitlines()
    blocks, inside, start = [], False, 0
    for i, line in enumerate(lines):
        if line.startswith("```"):
            if not inside:
                inside, start, lang = True, i, line[3:].strip()
            else:
                inside = False
                if lang != "python":
                    marker = lines[start - 1] if start and lines[start - 1].startswith("<!-- readme:") else None
                    blocks.append((marker, "\n".join(lines[start + 1 : i]), start + 1))
    return blocks


def commands_of(block: str) -> list[str]:
    """The block's commands: comments dropped, lines continued with a backslash joined."""
    joined = block.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_shell_block_runs_in_a_test_or_says_what_it_needs():
    blocks = shell_blocks()
    assert len(blocks) >= 8
    for marker, text, line in blocks:
        assert marker is not None, f"README.md line {line}: a code block without a `<!-- readme: ... -->` marker"
        kind = marker.removeprefix("<!-- readme:").strip()
        assert kind.startswith(("run", "needs", "not a command")), f"README.md line {line}: {marker}"
        if kind.startswith("needs"):
            assert any(n in kind for n in NEEDS), f"README.md line {line}: say which of {NEEDS} it needs: {marker}"


RUN_BLOCKS = [(text, line) for marker, text, line in shell_blocks() if marker and marker.startswith("<!-- readme: run")]


@pytest.mark.parametrize("text, line", RUN_BLOCKS, ids=[f"line {line}" for _, line in RUN_BLOCKS])
def test_readme_shell_block_runs(text, line, tiny_cache, tmp_path, monkeypatch, capsys):
    """The commands run as written; only the presets' defaults shrink (2 denoising steps) for speed."""
    import dataclasses
    import subprocess

    from mimic.cli import main
    from mimic.model import presets

    for name in ("tiny", "toy"):
        preset = presets.PRESETS[name]
        monkeypatch.setitem(presets.PRESETS, name, dataclasses.replace(preset, defaults=preset.defaults.with_overrides(steps=2)))
    monkeypatch.chdir(tmp_path)
    for command in commands_of(text):
        args = shlex.split(command)
        if args[0] == "make":
            rules = (README.parent / "Makefile").read_text()
            for target in (a for a in args[1:] if not a.startswith("-") and "=" not in a):
                assert re.search(rf"^{re.escape(target)}:", rules, flags=re.M), f"README.md line {line}: no Makefile rule `{target}`"
            proc = subprocess.run(["make", "-n", "-C", str(README.parent), *args[1:]], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, f"README.md line {line}: `{command}`: {proc.stderr}"
            continue
        assert args[0] == "mimic", f"README.md line {line}: run blocks hold mimic or make commands, got `{command}`"
        try:
            main(args[1:])
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        captured = capsys.readouterr()
        assert code == 0, f"README.md line {line}: `{command}` exited {code}: {captured.err[-500:]}"
        assert captured.out.strip(), command
        for flag, value in zip(args, args[1:]):  # what a command says it writes is there
            if flag in ("--out", "--preview") and args[1] in ("run", "pose"):
                assert (tmp_path / value).exists(), f"README.md line {line}: `{command}` did not write {value}"
                if flag == "--preview":
                    assert (tmp_path / value).with_suffix(".png").is_file(), f"README.md line {line}: no contact sheet beside {value}"
