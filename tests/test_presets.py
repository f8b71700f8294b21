"""The preset registry (one table, readable without torch) and the exit codes (declared once, in errors.py)."""
from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from mimic.errors import ExitCode, InputError, Interrupted, MimicError
from mimic.model.config import GenerationConfig
from mimic.model.presets import PRESET_NAMES, PRESETS, default_generation, layout_from_options

PACKAGE = Path(__file__).resolve().parents[1]


def test_the_registry_imports_without_torch_or_the_model_libraries():
    code = ("import sys, mimic.model.presets as p; p.default_generation('toy'); p.PRESETS['tiny'].shapes; "
            "print(','.join(m for m in ('torch', 'diffusers', 'transformers', 'onnx', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_every_preset_is_one_complete_row():
    assert PRESET_NAMES == tuple(PRESETS) == ("tiny", "toy")
    for name, preset in PRESETS.items():
        assert preset.name == name and preset.description
        assert isinstance(preset.defaults, GenerationConfig)
        assert dataclasses.replace(preset.defaults) == preset.defaults  # __post_init__ validates it again
        assert default_generation(name) is preset.defaults
        module, _, function = preset.make.partition(":")
        assert module.startswith("mimic.") and function  # resolved lazily, so only its shape is checked here
        from mimic.engine.build import parse_shapes

        assert parse_shapes(None, name) == parse_shapes(preset.shapes, None)


def test_no_preset_means_the_released_settings():
    assert default_generation(None) == GenerationConfig()


def test_an_unknown_preset_is_one_line_naming_the_known_ones():
    for call in (lambda: layout_from_options(preset="huge"), lambda: default_generation("huge")):
        with pytest.raises(InputError, match=r"^unknown preset 'huge'; known presets: tiny, toy$"):
            call()


def test_exit_codes_match_the_readme_table():
    readme = (PACKAGE / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Bad input, faults and exit codes", 1)[1].split("\n\n| exit | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = {int(n) for row in table.splitlines()[2:] for n in re.findall(r"\d+", row.split("|")[1])}
    assert documented == {int(c) for c in ExitCode}
    assert MimicError.exit_code == ExitCode.FAILED and Interrupted().exit_code == ExitCode.INTERRUPTED
    assert str(ExitCode.INTERNAL) == "70" and f"{ExitCode.TERMINATED}" == "143"


def _package_sources() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=PACKAGE, capture_output=True, text=True, check=True).stdout.split()
    skip = ("tests/", "mimicmotion_ref/", "build/")
    return [PACKAGE / f for f in listed if not f.startswith(skip) and f != "errors.py" and (PACKAGE / f).is_file()]


def test_exit_codes_70_130_143_are_written_only_in_errors_py():
    """A number token (not a string or a comment) 70, 130 or 143 on a line about exits is a second
    copy of the contract: use ``mimic.errors.ExitCode``."""
    found = []
    for path in _package_sources():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NUMBER and tok.string in ("70", "130", "143"):
                line = lines[tok.start[0] - 1]
                if re.search(r"exit|returncode|Interrupted", line, flags=re.I):
                    found.append(f"{path.relative_to(PACKAGE)}:{tok.start[0]}: {line.strip()}")
    assert not found, "\n".join(found)
