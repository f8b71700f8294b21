"""The ``onnxruntime`` backend: the exported graphs run by onnxruntime (CPU provider, or CUDA with
I/O binding so torch CUDA tensors are used in place, without host round trips). Sessions come from
the one factory, ``mimic.ort_session`` (its CUDA policy: no silent CPU fallback)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mimic.errors import EngineError, InputError
from mimic.ort_session import create_session, providers_for

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
_NUMPY_TO_TORCH = {np.float32: torch.float32, np.float16: torch.float16, np.float64: torch.float64, np.int64: torch.int64, np.int32: torch.int32}


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, graphs: dict[str, Path], device: str | torch.device = "cpu", threads: int | None = None):
        self.device = torch.device(device)
        self._graphs = {k: Path(v) for k, v in graphs.items()}
        missing = [f"{k} ({p})" for k, p in self._graphs.items() if not p.is_file()]
        if missing:
            raise EngineError(f"missing ONNX graphs: {', '.join(missing)}; run `mimic export` first")
        providers_for(self.device)  # no CUDA provider for a CUDA device: fail now, not at the first stage
        self._threads = threads
        self._sessions: dict = {}

    def session(self, stage: str):
        sess = self._sessions.get(stage)
        if sess is None:
            if stage not in self._graphs:
                raise InputError(f"no ONNX graph for stage {stage!r} (have {sorted(self._graphs)})")
            sess = create_session(self._graphs[stage], self.device, self._threads)
            self._sessions[stage] = sess
        return sess

    def run(self, stage: str, feeds: dict[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]:
        sess = self.session(stage)
        if self.device.type == "cuda":
            return self._run_bound(sess, feeds)
        inputs = {}
        for meta in sess.get_inputs():
            if meta.name not in feeds:
                raise InputError(f"stage {stage} needs input {meta.name!r}")
            inputs[meta.name] = feeds[meta.name].detach().cpu().numpy().astype(_ORT_TO_NUMPY[meta.type], copy=False)
        outs = sess.run(None, inputs)
        return {meta.name: torch.from_numpy(np.ascontiguousarray(o)) for meta, o in zip(sess.get_outputs(), outs)}

    def _run_bound(self, sess, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # GPU only
        binding = sess.io_binding()
        keep = []
        for meta in sess.get_inputs():
            t = feeds[meta.name].to(self.device, _NUMPY_TO_TORCH[_ORT_TO_NUMPY[meta.type]]).contiguous()
            keep.append(t)
            binding.bind_input(meta.name, "cuda", self.device.index or 0, _ORT_TO_NUMPY[meta.type], tuple(t.shape), t.data_ptr())
        for meta in sess.get_outputs():
            binding.bind_output(meta.name, "cuda", self.device.index or 0)
        torch.cuda.current_stream(self.device).synchronize()
        sess.run_with_iobinding(binding)
        outs = binding.get_outputs()
        return {meta.name: torch.from_dlpack(o.to_dlpack()) if hasattr(o, "to_dlpack") else torch.from_numpy(o.numpy()).to(self.device) for meta, o in zip(sess.get_outputs(), outs)}

    def close(self) -> None:
        self._sessions.clear()
