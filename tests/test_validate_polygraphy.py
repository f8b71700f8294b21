"""``mimic validate``'s CPU side: Polygraphy runners and Comparator (per-output tolerances, NaN/Inf),
the Polygraphy adapter around the pipeline's engine runner, and the choice of comparison points
that fit the memory onnxruntime has. The engine itself needs a GPU (tests/test_engine_gpu.py)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mimic.engine import validate as v
from mimic.export.onnx_export import export_stage
from mimic.spec import POSE_NET, UNET, Tolerance


@pytest.fixture(scope="module")
def graphs(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("validate-graphs")
    return {
        "pose32": export_stage(POSE_NET, tiny_models.pose_net, out, "fp32").path,
        "pose16": export_stage(POSE_NET, tiny_models.pose_net, out, "fp16").path,
        "unet16": export_stage(UNET, tiny_models.unet, out, "fp16").path,
    }


def _pose_feeds(seed=0, nan=False):
    x = np.random.default_rng(seed).random((4, 3, 64, 64)).astype(np.float32)  # pose images in [0, 1]
    if nan:
        x[0, 0, 0, 0] = np.nan
    return {"pose_images": x}


def test_polygraphy_compares_two_onnxruntime_runners(graphs):
    tol = v.tolerance_for("pose_net", "fp16")  # what `mimic validate` uses: twice the spec's bound
    fp16 = v.reference_runner(graphs["pose16"], "cpu", "fp16")
    fp32 = v.reference_runner(graphs["pose32"], "cpu", "fp32")
    rows = v.compare_runners("pose_net", "fp16", tol, fp16, fp32, [("a", _pose_feeds(0)), ("b", _pose_feeds(1))])
    assert [r.point for r in rows] == ["a", "b"] and all(r.passed for r in rows), rows
    assert 0 < rows[0].max_abs <= tol.max_abs
    tight = v.compare_runners("pose_net", "fp16", Tolerance(1e-7, 1e-7), fp16, fp32, [("a", _pose_feeds(0))])
    assert not tight[0].passed  # fp16 vs fp32 differs by more than 1e-7
    bad = v.compare_runners("pose_net", "fp16", tol, fp16, fp32, [("nan", _pose_feeds(0, nan=True))])
    assert not bad[0].passed and bad[0].nonfinite > 0


class _OnnxBackedEngine:
    """Stands in for TrtRunner on the CPU: the same graph through onnxruntime, plus an offset."""

    def __init__(self, path, offset):
        from mimic.ort_session import create_session

        self.sess, self.offset, self.stage = create_session(path, "cpu"), offset, "pose_net"
        self.inputs = [v_info for v_info in self._infos()]

    def _infos(self):
        from mimic.engine.runner import TensorInfo

        return [TensorInfo(i.name, True, torch.float32, tuple(d if isinstance(d, int) else -1 for d in i.shape)) for i in self.sess.get_inputs()]

    def run(self, feeds):
        outs = self.sess.run(None, {k: t.numpy() for k, t in feeds.items()})
        return {o.name: torch.from_numpy(a) + self.offset for o, a in zip(self.sess.get_outputs(), outs)}


def test_engine_adapter_is_a_polygraphy_runner_with_per_output_tolerance(graphs):
    tol = POSE_NET.tolerance("fp32")
    ref = v.reference_runner(graphs["pose32"], "cpu")
    same = v.engine_runner(_OnnxBackedEngine(graphs["pose32"], 0.0), "cpu", name="engine-same")
    assert isinstance(same, v.EngineRunner)
    assert all(r.passed for r in v.compare_runners("pose_net", "fp32", tol, same, ref, [("opt", _pose_feeds())]))
    off = v.engine_runner(_OnnxBackedEngine(graphs["pose32"], 10 * tol.max_abs), "cpu", name="engine-off")
    rows = v.compare_runners("pose_net", "fp32", tol, off, ref, [("opt", _pose_feeds())])
    assert not rows[0].passed


def test_points_that_do_not_fit_are_skipped_with_a_line(graphs, caplog):
    small = {"sample": np.zeros((2, 8, 8, 16, 16), np.float16), "timestep": np.zeros(2, np.float32),
             "encoder_hidden_states": np.zeros((2, 1, 32), np.float16), "added_time_ids": np.zeros((2, 3), np.float32),
             "pose_latents": np.zeros((16, 32, 16, 16), np.float16)}
    big = dict(small, sample=np.zeros((2, 8, 8, 128, 128), np.float16), pose_latents=np.zeros((16, 32, 128, 128), np.float16))
    cases = [("min", small), ("max", big)]
    from mimic.export.attention import graph_memory

    unfused_big = graph_memory(graphs["unet16"], {k: a.shape for k, a in big.items()}, fused=False)
    fused_big = graph_memory(graphs["unet16"], {k: a.shape for k, a in big.items()}, fused=True)
    assert unfused_big.scores == 16 * 2 * (128 * 128) ** 2 * 2  # 2 CFG x 8 frames, 2 heads, 16384 tokens, fp16
    assert fused_big.peak < unfused_big.peak
    budget = (fused_big.peak + unfused_big.peak) // 2
    with caplog.at_level(logging.INFO, logger="mimic"):
        kept = v.fitting_cases("unet", cases, graphs["unet16"], fused=False, budget=budget)
    assert [c for c, _ in kept] == ["min"] and "unet max: skipped" in caplog.text and "unfused attention scores" in caplog.text
    assert [c for c, _ in v.fitting_cases("unet", cases, graphs["unet16"], fused=True, budget=budget)] == ["min", "max"]
