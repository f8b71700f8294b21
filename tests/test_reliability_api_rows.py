"""Rows of the third reliability pass about the Python API and checkpoints: a CUDA device on a
cpu-only PyTorch is one line (row 14), ``render`` refuses what is not a job (row 18), checkpoint
warnings land in the job's report (row 19), a ``cpu`` checkpoint resumes under ``cpu,cpu`` (row 20)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _runtime_helpers import make_inputs, run_cli
from mimic.errors import InputError

ARGS = ["--resolution", "64", "--steps", "2", "--window", "6", "--overlap", "2", "--sample-stride", "1"]
NO_CUDA = "--device cuda: PyTorch here has no CUDA (cpu-only build)"
cpu_only_torch = pytest.mark.skipif(torch.backends.cuda.is_built(), reason="needs a cpu-only PyTorch build")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"), frames=10)


def _run(inputs, out, *more, capsys):
    ref, video = inputs
    return run_cli(["run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), "--out", str(out), *ARGS, *more], capsys)


def _frames(folder):
    import cv2

    return np.stack([cv2.imread(str(p)) for p in sorted(folder.glob("frame_*.png"))])


# ---------------------------------------------------------------------------------- row 14


@cpu_only_torch
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
@pytest.mark.parametrize("device", ["cuda", "cuda:7", "cuda:0,cuda:1"])
def test_cuda_on_a_cpu_only_torch_is_one_line_exit_2(tiny_cache, inputs, tmp_path, capsys, backend, device):
    code, _, err = _run(inputs, tmp_path / "o.mp4", "--device", device, "--backend", backend, capsys=capsys)
    assert code == 2 and err.strip() == f"error: {NO_CUDA}", err
    assert not (tmp_path / "o.mp4").exists()


@cpu_only_torch
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_cuda_on_a_cpu_only_torch_through_the_api_says_so(tiny_cache, backend):
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    for device in ("cuda", "cuda:7"):
        with pytest.raises(InputError) as err:
            MimicMotion.from_preset("tiny", RuntimeOptions(backend=backend, device=device))
        assert str(err.value) == NO_CUDA


# ---------------------------------------------------------------------------------- row 18


@pytest.fixture(scope="module")
def mm(tiny_cache):
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="onnxruntime")) as mm:
        yield mm


@pytest.mark.parametrize("method", ["render", "admit"])
@pytest.mark.parametrize("job, kind", [({"reference": "a.png", "driving": "d.mp4", "out": "o.mp4"}, "dict"), ("a.png", "str"), (None, "NoneType")])
def test_render_and_admit_refuse_what_is_not_a_job(mm, method, job, kind):
    with pytest.raises(InputError) as err:
        getattr(mm, method)(job)
    assert str(err.value) == (f"{method}() takes a mimic.runtime.jobs.Job (or an AdmittedJob), got {kind}: "
                              "build one with Job(reference=..., driving=..., out=...)")


# ---------------------------------------------------------------------------------- row 19


def _report_warnings(out):
    return json.loads((out / "report.json").read_text())["warnings"]


@pytest.mark.parametrize("manifest, warning", [
    ("{not json", "ignoring the damaged checkpoint in"),
    (json.dumps({"format": 2, "key": "another job"}), "it was made for other inputs, settings or weights"),
])
def test_a_damaged_or_foreign_checkpoint_is_in_the_report(tiny_cache, inputs, tmp_path, capsys, manifest, warning):
    out = tmp_path / "out"
    (tmp_path / "out.checkpoint").mkdir()
    (tmp_path / "out.checkpoint" / "checkpoint.json").write_text(manifest)
    code, stdout, err = _run(inputs, out, capsys=capsys)
    listed = [w for w in _report_warnings(out) if warning in w]
    assert code == 0 and len(listed) == 1 and f"\nwarning: {listed[0]}\n" in "\n" + err, (stdout, err, listed)  # warnings: stderr


def test_an_unwritable_checkpoint_folder_is_in_the_report(tiny_cache, inputs, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    out = tmp_path / "out"
    code, stdout, err = _run(inputs, out, "--checkpoint-dir", str(tmp_path / "afile" / "ckpt"), capsys=capsys)
    listed = [w for w in _report_warnings(out) if "cannot write checkpoint" in w]
    assert code == 0 and len(listed) == 1 and f"\nwarning: {listed[0]}\n" in "\n" + err, (stdout, err, listed)  # warnings: stderr
    assert listed[0].endswith("; the job goes on without checkpoints")


# ---------------------------------------------------------------------------------- row 20


def test_a_cpu_checkpoint_resumes_under_two_cpu_workers_byte_identical(tiny_cache, inputs, tmp_path, capsys, monkeypatch):
    from mimic.errors import Interrupted
    from mimic.runtime import checkpoint

    fresh = tmp_path / "fresh"
    code, _, err = _run(inputs, fresh, "--device", "cpu", capsys=capsys)
    assert code == 0, err

    out = tmp_path / "resumed"
    save = checkpoint.CheckpointStore.save

    def save_then_stop(self, step, num_steps, latents):
        ok = save(self, step, num_steps, latents)
        if step == 1:
            raise Interrupted("SIGTERM", 143)
        return ok

    with monkeypatch.context() as m:
        m.setattr(checkpoint.CheckpointStore, "save", save_then_stop)
        code, _, err = _run(inputs, out, "--device", "cpu", "--checkpoint-every", "1", capsys=capsys)
    assert code == 143, err
    assert json.loads((tmp_path / "resumed.checkpoint" / "checkpoint.json").read_text())["step"] == 1

    code, stdout, err = _run(inputs, out, "--device", "cpu,cpu", "--checkpoint-every", "1", capsys=capsys)
    assert code == 0, err
    assert "resumed from the checkpoint saved after step 1" in stdout and "ignoring" not in stdout
    assert np.array_equal(_frames(out), _frames(fresh))
    assert json.loads((out / "report.json").read_text())["resumed_from_step"] == 1


def test_the_checkpoint_key_follows_the_bits_not_the_worker_count(tiny_layout, monkeypatch):
    """cpu == cpu,cpu; the kind, backend and precision count; on CUDA the GPU model, not the index."""
    from mimic.runtime.checkpoint import weights_fingerprint

    def key(device, backend="onnxruntime", precision="fp32"):
        return weights_fingerprint(tiny_layout, {"backend": backend, "device": device, "precision": precision})

    assert key("cpu") == key("cpu,cpu") == key("cpu,cpu,cpu")
    assert key("cpu") != key("cpu", backend="torch") and key("cpu") != key("cpu", precision="fp16")

    models = {0: "NVIDIA H100", 1: "NVIDIA H100", 2: "NVIDIA A100"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: models[index])
    assert key("cuda") == key("cuda:0") == key("cuda:1") == key("cuda:0,cuda:1") == key("cuda:0,cuda:0")
    assert key("cuda:0") != key("cuda:2")  # another GPU model: other kernels, other bits
    assert key("cuda:0,cuda:2") != key("cuda:0") and key("cuda:0,cuda:2") != key("cuda:2,cuda:0")
    assert key("cuda:0") != key("cpu")
