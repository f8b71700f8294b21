"""Rows of the third reliability pass that the command line answers before any work (no model, no
Ray): each is one line naming the flag, exit 2, nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from _runtime_helpers import make_inputs, run_cli
from mimic.errors import InputError
from mimic.runtime.jobs import Job


@pytest.fixture()
def inputs(tmp_path):
    return make_inputs(tmp_path / "in", frames=3)


def _jobs_file(tmp_path: Path, inputs) -> Path:
    ref, video = inputs
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(json.dumps([{"ref": str(ref), "driving": str(video), "out": str(tmp_path / "a.mp4")}]))
    return jobs


@pytest.mark.parametrize("flag, value, message", [
    ("--workers", "0", "--workers must be >= 1, got 0"),
    ("--retries", "-1", "--retries must be >= 0, got -1"),
    ("--jobs-per-worker", "0", "--jobs-per-worker must be >= 1, got 0"),
    ("--devices-per-worker", "0", "--devices-per-worker must be >= 1, got 0"),
])
def test_farm_sizes_out_of_range_are_exit_2_naming_the_flag(flag, value, message, tmp_path, inputs, capsys):  # row 7
    code, out, err = run_cli(["farm", "--jobs", str(_jobs_file(tmp_path, inputs)), "--preset", "tiny", flag, value], capsys)
    assert code == 2 and err.strip() == f"error: {message}", err


def test_farm_report_that_cannot_be_written_is_refused_before_any_job(tmp_path, inputs, capsys):  # row 9
    (tmp_path / "afile").write_text("")
    code, out, err = run_cli(["farm", "--jobs", str(_jobs_file(tmp_path, inputs)), "--preset", "tiny",
                              "--report", str(tmp_path / "afile" / "r.json")], capsys)
    assert code == 2 and err.strip() == f"error: --report {tmp_path}/afile/r.json: {tmp_path}/afile is a file, not a folder", err
    assert not (tmp_path / "a.mp4").exists()


def test_openjd_template_into_a_file_is_one_line(tmp_path, capsys):  # row 10
    target = tmp_path / "bundle"
    target.write_text("not a folder")
    code, out, err = run_cli(["farm", "openjd-template", "-o", str(target)], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip() == f"error: --out {target} is a file: give a folder for the job bundle (template.yaml, parameter_values.yaml)"
    assert target.read_text() == "not a folder"


def test_an_output_whose_report_name_is_too_long_is_refused_before_work(tmp_path, inputs, capsys):  # row 13
    ref, video = inputs
    out = tmp_path / ("o" * 235 + ".mp4")  # the video's temporary name fits in 255 bytes, the report's does not
    code, _, err = run_cli(["run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), "--out", str(out)], capsys)
    assert code == 2 and "the file name is too long" in err and ".report.json" in err and "Traceback" not in err
    assert not out.exists()


def test_out_dash_is_refused_and_a_symlinked_output_is_written_through(tmp_path, inputs, capsys):  # row 16
    ref, video = inputs
    code, _, err = run_cli(["run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), "--out", "-"], capsys)
    assert code == 2 and err.strip().startswith("error: --out -: writing to standard output is not supported")
    target = tmp_path / "renders" / "final.mp4"
    target.parent.mkdir()
    target.write_bytes(b"old render")
    link = tmp_path / "latest.mp4"
    link.symlink_to(target)
    job = Job(reference=ref, driving=video, out=link)
    assert job.out == target and job.output_paths()["report"] == target.with_name("final.mp4.report.json")


def test_a_huge_seed_is_reported_as_typed(tmp_path, inputs, capsys):  # row 22
    ref, video = inputs
    code, _, err = run_cli(["run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), "--out", str(tmp_path / "o.mp4"),
                            "--seed", "99999999999999999999999"], capsys)
    assert code == 2 and err.strip() == "error: --seed must be in 0..9223372036854775807, got 99999999999999999999999", err


def test_a_job_without_a_reference_is_refused_by_the_python_api():  # row 18 (the Job half)
    with pytest.raises(InputError, match=r"^a job needs --ref \(got None\)$"):
        Job(reference=None, driving="d.mp4", out="o.mp4")
