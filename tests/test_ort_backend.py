"""onnxruntime on the way to CUDA, checked on the CPU: one install story, outputs through DLPack,
fused attention selected for CUDA (and on request), CPU runs unchanged."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mimic import ort_session
from mimic.errors import EngineError


def test_no_onnxruntime_names_both_extras(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails like a missing install
    monkeypatch.setattr(ort_session, "installed_distributions", lambda: [])
    with pytest.raises(EngineError, match=r"mimic-engine\[cpu\].*mimic-engine\[gpu\].*never both"):
        ort_session.import_onnxruntime("cpu")


def test_both_wheels_installed_is_an_error_for_cuda_and_a_warning_on_cpu(monkeypatch, caplog):
    monkeypatch.setattr(ort_session, "installed_distributions", lambda: ["onnxruntime", "onnxruntime-gpu"])
    monkeypatch.setattr(ort_session, "_warned_both", False)
    with pytest.raises(EngineError, match="pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"):
        ort_session.providers_for("cuda:0")
    with caplog.at_level(logging.WARNING, logger="mimic"):
        assert ort_session.providers_for("cpu") == ["CPUExecutionProvider"]
    assert "both onnxruntime and onnxruntime-gpu are installed" in caplog.text
    assert not ort_session.cuda_available()


def test_the_project_depends_on_neither_wheel_directly():
    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    names = lambda deps: {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in deps}  # noqa: E731
    assert not names(meta["dependencies"]) & {"onnxruntime", "onnxruntime-gpu"}
    extras = meta["optional-dependencies"]
    assert "onnxruntime" in names(extras["cpu"]) and "onnxruntime-gpu" in names(extras["gpu"])
    for extra, deps in extras.items():  # no extra brings both
        assert not {"onnxruntime", "onnxruntime-gpu"} <= names(deps), extra


def test_outputs_come_through_dlpack_without_a_copy():
    import onnxruntime as ort

    from mimic.runtime.backend_ort import ort_value_to_torch

    value = ort.OrtValue.ortvalue_from_numpy(np.arange(12, dtype=np.float32).reshape(3, 4))
    t = ort_value_to_torch(value, torch.device("cpu"))
    assert t.data_ptr() == value.data_ptr() and t.shape == (3, 4) and float(t[2, 3]) == 11.0


def test_fused_graphs_are_chosen_for_cuda_and_on_request(tmp_path):
    from mimic.export.attention import FUSED_SUFFIX, fused_graph
    from mimic.runtime.backend_ort import OnnxRuntimeBackend

    path = _tiny_attention_graph(tmp_path / "attn.onnx")
    cpu = OnnxRuntimeBackend({"attn": path})
    assert not cpu.fuse_attention and cpu.graph_path("attn") == path  # CPU renders: the plain graphs, as before
    fused = OnnxRuntimeBackend({"attn": path}, fuse_attention=True)
    assert fused.graph_path("attn").name == "attn" + FUSED_SUFFIX == fused_graph(path).name
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    got = fused.run("attn", {"x": torch.from_numpy(x)})["y"]
    want = cpu.run("attn", {"x": torch.from_numpy(x)})["y"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert fused.paths["attn"].name.endswith(FUSED_SUFFIX)


def _tiny_attention_graph(path: Path) -> Path:
    """A 2-head self-attention exported by torch's TorchScript exporter (SDPA, as diffusers calls it)."""

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = (torch.nn.Linear(8, 8) for _ in range(3))

        def forward(self, x):
            b = x.shape[0]
            q, k, v = (p(x).view(b, -1, 2, 4).transpose(1, 2) for p in (self.q, self.k, self.v))
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            return o.transpose(1, 2).reshape(b, -1, 8)

    torch.manual_seed(0)
    torch.onnx.export(Attn().eval(), (torch.randn(2, 5, 8),), str(path), dynamo=False, opset_version=20, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b", 1: "s"}, "y": {0: "b", 1: "s"}})
    return path
