"""Settings declared once (``mimic.model.config``), admitted the same way by every entry point: `mimic
run` and `mimic farm` show the same generation options, jobs files speak the CLI's words, a bad job
fails alone, and help and bad-input errors import neither torch nor diffusers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _runtime_helpers import make_inputs, run_cli
from mimic.commands.options import setting_flags
from mimic.errors import InputError
from mimic.model.config import SETTINGS, GenerationConfig, settings_from_mapping
from mimic.runtime.jobs import Job, RefusedJob, load_jobs_file

ROOT = Path(__file__).resolve().parents[1]


def _help(command: str, capsys) -> str:
    code, out, err = run_cli([command, "--help"], capsys)
    assert code == 0, err
    return out


def test_run_and_farm_show_every_generation_option_of_the_one_declaration(capsys):
    flags = setting_flags()
    assert {s.flag for s in SETTINGS.values() if s.cli} <= set(flags) and "--guidance" in flags
    assert "--fps-cond" not in flags  # a file-only setting
    for command in ("run", "farm"):
        text = _help(command, capsys)
        missing = [f for f in flags if f not in text]
        assert not missing, f"mimic {command} --help lacks {missing}"


_PROBE = """
import json, sys
from mimic.cli import main
code = 0
try:
    main({argv!r})
except SystemExit as e:
    code = e.code
print(json.dumps({{"code": code, "heavy": [m for m in ("torch", "diffusers", "transformers", "onnxruntime") if m in sys.modules]}}))
"""


@pytest.mark.parametrize("argv, code, message", [
    (["--help"], 0, None),
    (["run", "--help"], 0, None),
    (["farm", "--help"], 0, None),
    (["run", "--ref", "missing.png", "--driving", "x.mp4", "--out", "o.mp4"], 2, "--ref missing.png does not exist"),
    (["run", "--ref", "REF", "--driving", "VIDEO", "--out", "o.mp4", "--steps", "0"], 2, "--steps must be in 1..1000, got 0"),
    (["run", "--jobs", "JOBS_UNKNOWN"], 1, "unknown key 'fsp'; did you mean 'fps'?"),
    (["run", "--ref", "REF", "--driving", "VIDEO", "--out", "VIDEO"], 2, "is the job's --driving input"),
])
def test_help_and_bad_input_need_neither_torch_nor_diffusers(argv, code, message, tmp_path):
    ref, video = make_inputs(tmp_path / "in", frames=3)
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(json.dumps([{"ref": str(ref), "driving": str(video), "out": str(tmp_path / "a.mp4"), "fsp": 8},
                                {"ref": str(tmp_path / "nope.png"), "driving": str(video), "out": str(tmp_path / "b.mp4")}]))
    argv = [{"REF": str(ref), "VIDEO": str(video), "JOBS_UNKNOWN": str(jobs)}.get(a, a) for a in argv]
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] in ((0, None) if code == 0 else (code,)), proc.stderr
    assert result["heavy"] == [], f"mimic {' '.join(argv)} imported {result['heavy']}"
    if message:
        assert message in proc.stderr and "Traceback" not in proc.stderr


def test_jobs_file_keys_are_the_cli_words_with_the_old_names_as_aliases(tmp_path):
    ref, video = make_inputs(tmp_path / "in", frames=3)
    (tmp_path / "poses.npz").write_bytes(b"")
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(f"""
- {{ref: in/ref.png, driving: in/drive.mp4, out: a.mp4, fps: 8, resolution: 720, noise_aug: 0.1, guidance: 3}}
- {{reference: in/ref.png, pose: poses.npz, out: b.mp4, output_fps: 8, num_inference_steps: 3}}
- {{ref: in/ref.png, driving: in/drive.mp4, out: c.mp4, steps: two}}
- {{ref: in/ref.png, driving: in/drive.mp4, out: d.mp4, fsp: 8}}
- {{driving: in/drive.mp4, out: e.mp4}}
""")
    a, b, c, d, e = load_jobs_file(jobs)
    assert a.reference == tmp_path / "in/ref.png" and a.driving == tmp_path / "in/drive.mp4"
    assert a.overrides == {"output_fps": 8, "resolution": 704, "noise_aug_strength": 0.1, "guidance_min": 3, "guidance_max": 3}
    assert a.warnings == ("resolution 720 is not a multiple of 64; using 704",)
    assert b.poses == tmp_path / "poses.npz" and b.overrides == {"output_fps": 8, "steps": 3}
    assert c == RefusedJob(3, "--steps must be an integer, got 'two'", tmp_path / "c.mp4", jobs)
    assert d == RefusedJob(4, "unknown key 'fsp'; did you mean 'fps'?", tmp_path / "d.mp4", jobs)
    assert e == RefusedJob(5, "needs 'ref' (the reference image and the output)", tmp_path / "e.mp4", jobs)


def test_every_entry_point_normalises_alike():
    overrides, warnings = settings_from_mapping({"resolution": 720, "fps": 12})
    assert overrides == {"resolution": 704, "output_fps": 12} and warnings == ["resolution 720 is not a multiple of 64; using 704"]
    job = Job(reference="r.png", driving="d.mp4", out="o.mp4", overrides={"resolution": 720})  # the Python API
    assert job.config(GenerationConfig()).resolution == 704 and job.warnings == tuple(warnings)
    from dataclasses import replace

    assert replace(job, reference="/abs/r.png").warnings == job.warnings  # the farm makes paths absolute: the warning stays
    with pytest.raises(InputError, match=r"^job for r.png: --seed must be in 0\.\.9223372036854775807, got 99999999999999999999999$"):
        Job(reference="r.png", driving="d.mp4", out="o.mp4", overrides={"seed": 99999999999999999999999})
    with pytest.raises(InputError, match=r"^a job needs --ref \(got None\)$"):
        Job(reference=None, driving="d.mp4", out="o.mp4")


def test_a_bad_job_fails_alone_and_the_rounding_is_in_each_report(tiny_cache, tmp_path, capsys):
    ref, video = make_inputs(tmp_path / "in", frames=4)
    jobs = tmp_path / "jobs.yaml"
    common = "driving: in/drive.mp4, steps: 1, window: 4, overlap: 1, sample_stride: 1"
    jobs.write_text(f"""
- {{ref: in/ref.png, {common}, out: a, fps: 8, resolution: 100}}
- {{ref: in/ref.png, {common}, out: b, steps: two}}
- {{ref: in/ref.png, {common}, out: c}}
""")
    code, out, err = run_cli(["run", "--preset", "tiny", "--jobs", str(jobs), "--resolution", "64", "--progress", "none", "--sequential"], capsys)
    assert code == 1, err
    assert "error: job 2" in err and "--steps must be an integer, got 'two'" in err and "2 done, 1 failed" in err
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    assert a["config"]["resolution"] == 128 and a["config"]["output_fps"] == 8
    assert "resolution 100 is not a multiple of 64; using 128" in a["warnings"]
    assert (tmp_path / "c" / "report.json").is_file() and not (tmp_path / "b").exists()


def test_the_readme_jobs_file_example_is_valid(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = text.split("### Jobs files", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "jobs.yaml").write_text(block)
    entries = load_jobs_file(tmp_path / "jobs.yaml")
    assert [type(e) for e in entries] == [Job, Job], entries
    assert entries[0].overrides == {"output_fps": 15, "steps": 25, "resolution": 576, "seed": 7} and entries[1].poses.name == "salsa.npz"
