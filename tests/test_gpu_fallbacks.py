"""The GPU path's fallbacks and checks, on the CPU with fakes: DWPose leaves a CUDA device onnxruntime
cannot serve (one warning) while the main stages still refuse; the CUDA provider options; the DLPack
fallback's warning; the CUDA memory preflight (activations, not only weights; a CUDA-less torch)."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mimic import ort_session
from mimic.errors import EngineError, InputError
from mimic.model.config import GenerationConfig
from mimic.runtime import memory
from mimic.runtime.memory import GB

SVD_UNET = {"block_out_channels": [320, 640, 1280, 1280], "num_attention_heads": [5, 10, 20, 20]}
SVD_VAE = {"block_out_channels": [128, 256, 512, 512]}
SVD_WEIGHTS = int(4.5 * GB)  # MimicMotion 1.1 fp16 UNet + PoseNet, SVD VAE and image encoder: about this much


def _warnings(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


# ----------------------------------------------------------------------------------------- DWPose

@pytest.fixture(scope="module")
def tiny_dwpose(tmp_path_factory):
    from mimic.model.tiny_dwpose import write_tiny_dwpose

    return write_tiny_dwpose(tmp_path_factory.mktemp("dwpose"))


def test_dwpose_runs_on_the_cpu_with_one_warning_when_onnxruntime_has_no_cuda(tiny_dwpose, monkeypatch, caplog):
    from mimic.pose import detector as module
    from mimic.runtime.api import MimicMotion

    monkeypatch.setattr(ort_session, "cuda_available", lambda: False)
    monkeypatch.setattr(module, "_warned_cpu_fallback", False)
    with caplog.at_level(logging.WARNING, logger="mimic"):
        first = module.DWPoseDetector(*tiny_dwpose, device="cuda:0")
        # the service's detector (`--backend torch --device cuda`) goes the same way, without a second warning
        service = SimpleNamespace(_detector=None, layout=SimpleNamespace(det_model=tiny_dwpose[0], pose_model=tiny_dwpose[1]),
                                  options=SimpleNamespace(main_device="cuda:0"))
        second = MimicMotion.detector(service)
    for det in (first, second):
        assert det.device == "cpu"
        assert det.detector.provider == det.pose_model.provider == "CPUExecutionProvider"
    assert len(_warnings(caplog, "DWPose runs on the CPU, not cuda:0: this onnxruntime has no CUDA provider")) == 1
    frame = np.full((320, 256, 3), 30, np.uint8)
    assert len(first.detect_frames([frame])) == 1
    with pytest.raises(InputError, match="bad device 'cuda:x'"):
        module.DWPoseDetector(*tiny_dwpose, device="cuda:x")


def test_dwpose_falls_back_when_the_cuda_provider_does_not_start(tiny_dwpose, monkeypatch, caplog):
    from mimic.pose import detector as module

    real = module.OnnxModel
    cuda = (ort_session.CUDA_PROVIDER, {"device_id": 0})

    class Dropped(real):  # an onnxruntime that lists CUDA but gives a CPU session
        def __init__(self, path, spec, providers, batching=True):
            super().__init__(path, spec, [ort_session.CPU_PROVIDER], batching)

    monkeypatch.setattr(ort_session, "cuda_available", lambda: True)
    monkeypatch.setattr(module, "providers_for", lambda device: [cuda, ort_session.CPU_PROVIDER] if device.startswith("cuda") else [ort_session.CPU_PROVIDER])
    monkeypatch.setattr(module, "OnnxModel", Dropped)
    monkeypatch.setattr(module, "_warned_cpu_fallback", False)
    with caplog.at_level(logging.WARNING, logger="mimic"):
        det = module.DWPoseDetector(*tiny_dwpose, device="cuda")
    assert det.device == "cpu"
    assert len(_warnings(caplog, "could not start its CUDA provider")) == 1


def test_the_main_stages_still_refuse_a_cuda_device_onnxruntime_lacks(tmp_path, monkeypatch):
    from mimic.runtime.backend_ort import OnnxRuntimeBackend

    fake = SimpleNamespace(__version__="1.99.0", get_available_providers=lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(ort_session, "import_onnxruntime", lambda device="cpu": fake)
    graph = tmp_path / "unet.onnx"
    graph.write_bytes(b"not read: the provider check comes first")
    with pytest.raises(EngineError, match="onnxruntime 1.99.0 has no CUDA provider here"):
        OnnxRuntimeBackend({"unet": graph}, "cuda:0")
    with pytest.raises(EngineError, match="no CUDA provider"):
        ort_session.create_session(graph, "cuda:0")


# ------------------------------------------------------------------------------- onnxruntime CUDA

def test_cuda_provider_options_are_explicit(monkeypatch):
    made = {}

    class Session:
        def __init__(self, path, opts, providers):
            made["providers"] = providers

        def get_providers(self):
            return [ort_session.CUDA_PROVIDER, ort_session.CPU_PROVIDER]

    class Options:
        def add_session_config_entry(self, key, value):
            pass

    fake = SimpleNamespace(__version__="1.20.0", get_available_providers=lambda: [ort_session.CUDA_PROVIDER, ort_session.CPU_PROVIDER],
                           SessionOptions=Options, InferenceSession=Session)
    monkeypatch.setattr(ort_session, "import_onnxruntime", lambda device="cpu": fake)
    want = [(ort_session.CUDA_PROVIDER, {"device_id": 1, "cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested",
                                         "do_copy_in_default_stream": "1", "cudnn_conv_use_max_workspace": "1"}),
            ort_session.CPU_PROVIDER]
    assert ort_session.providers_for(torch.device("cuda", 1)) == want
    ort_session.create_session("unet.onnx", "cuda:1")
    assert made["providers"] == want
    assert "enable_cuda_graph" not in want[0][1]
    assert ort_session.providers_for("cpu") == [ort_session.CPU_PROVIDER]


def test_an_onnxruntime_without_dlpack_is_warned_once_and_copies_through_the_host(monkeypatch, caplog):
    import onnxruntime as ort

    from mimic.runtime import backend_ort

    class OldValue:  # an OrtValue with neither __dlpack__ nor to_dlpack
        def __init__(self, array):
            self.array = array

        def numpy(self):
            return self.array

    monkeypatch.setattr(backend_ort, "_warned_no_dlpack", False)
    old = SimpleNamespace(__version__="1.14.1", OrtValue=OldValue)
    with caplog.at_level(logging.WARNING, logger="mimic"):
        assert backend_ort.dlpack_outputs(ort)  # the installed one has it: nothing said
        assert not backend_ort.dlpack_outputs(old) and not backend_ort.dlpack_outputs(old)
    said = _warnings(caplog, "DLPack")
    assert len(said) == 1 and "onnxruntime 1.14.1" in said[0] and "host round trip" in said[0]
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = backend_ort.ort_value_to_torch(OldValue(array), torch.device("cpu"))
    want = backend_ort.ort_value_to_torch(ort.OrtValue.ortvalue_from_numpy(array), torch.device("cpu"))
    assert torch.equal(got, want) and torch.equal(got, torch.from_numpy(array))


# ------------------------------------------------------------------------------- CUDA preflight

def test_cuda_estimate_counts_the_activations_at_576x1024_window_72():
    cfg = GenerationConfig(resolution=576, window=72, decode_chunk=8)
    est = memory.estimate_cuda_job_memory(SVD_UNET, SVD_VAE, cfg, fp32=False, weights_bytes=SVD_WEIGHTS)
    channel = 2 * 72 * (72 * 128) * 2  # one first-level channel of the fp16 CFG pair
    assert round(channel * 8 * 320 / 1e9, 1) == 6.8  # the GEGLU projection output: "one GEGLU activation is 6.8 GB"
    assert est.unet_bytes == channel * 24 * 320
    assert est.vae_bytes == 8 * 576 * 1024 * 2 * 3 * 256
    assert est.attention_bytes == 0 and est.weights_bytes == SVD_WEIGHTS
    assert est.peak_bytes - SVD_WEIGHTS > 24 * GB - SVD_WEIGHTS  # a 24 GB card is refused ...
    assert est.peak_bytes < 79 * GB  # ... an 80 GB one is not
    assert memory.estimate_cuda_job_memory(SVD_UNET, None, cfg, False).vae_bytes == est.vae_bytes  # no VAE config: SVD's
    fp32 = memory.estimate_cuda_job_memory(SVD_UNET, SVD_VAE, cfg, fp32=True)
    assert fp32.unet_bytes == 2 * est.unet_bytes
    small = memory.estimate_cuda_job_memory(SVD_UNET, SVD_VAE, GenerationConfig(resolution=576, window=16), False)
    assert small.unet_bytes * 72 == est.unet_bytes * 16


@pytest.fixture
def svd_configs(tmp_path, monkeypatch):
    """A layout whose SVD folder holds only the real configs; the weights counted as SVD_WEIGHTS."""
    import json

    from mimic.model import weights

    for sub, cfg in (("unet", SVD_UNET), ("vae", SVD_VAE)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(weights, "fetch_svd", lambda svd: tmp_path)
    monkeypatch.setattr(memory, "_weights_bytes", lambda layout, svd_dir, fp32: SVD_WEIGHTS * (2 if fp32 else 1))
    monkeypatch.setattr(memory, "_cleared", {})
    return SimpleNamespace(svd=tmp_path)


def test_cuda_preflight_refuses_a_24gb_card_and_names_the_flags(svd_configs):
    cfg = GenerationConfig(resolution=576, window=72, decode_chunk=8)
    with pytest.raises(InputError) as err:
        memory.preflight(svd_configs, cfg, "torch", "cuda:0", False, available=int(23.5 * GB))
    line = str(err.value)
    assert "\n" not in line and line.startswith("this job needs ~") and " GB on cuda:0, 23.5 GB available " in line
    assert line.endswith("(--resolution 576, --window 72, --decode-chunk 8, torch): lower --resolution, --window or --decode-chunk")
    with pytest.raises(InputError, match="GB on cuda:0"):  # loaded: the weights are on the card, the rest still does not fit
        memory.preflight(svd_configs, cfg, "torch", "cuda:0", False, available=24 * GB - SVD_WEIGHTS, loaded=True)
    est = memory.preflight(svd_configs, cfg, "torch", "cuda:0", False, available=79 * GB)
    assert est.weights_bytes == SVD_WEIGHTS and est.unet_bytes > 0
    assert memory.preflight(svd_configs, GenerationConfig(resolution=576, window=16), "torch", "cuda:0", False, available=int(23.5 * GB))


def test_a_loaded_backend_is_not_refused_for_memory_its_pools_already_hold(svd_configs):
    cfg = GenerationConfig(resolution=576, window=72)
    memory.preflight(svd_configs, cfg, "onnxruntime", "cuda:0", False, available=70 * GB, loaded=True)
    # the first job left its activations in onnxruntime's arena: little is free, the same job still fits
    memory.preflight(svd_configs, cfg, "onnxruntime", "cuda:0", False, available=1 * GB, loaded=True)
    with pytest.raises(InputError):  # a bigger job is measured again
        memory.preflight(svd_configs, cfg.with_overrides(window=96), "onnxruntime", "cuda:0", False, available=1 * GB, loaded=True)
    with pytest.raises(InputError):  # another device is its own
        memory.preflight(svd_configs, cfg, "onnxruntime", "cuda:1", False, available=1 * GB, loaded=True)


def test_a_torch_without_cuda_is_a_one_line_error(svd_configs, monkeypatch):
    cfg = GenerationConfig(resolution=576, window=16)
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    with pytest.raises(InputError) as err:
        memory.preflight(svd_configs, cfg, "torch", "cuda", False)
    assert str(err.value) == "--device cuda: PyTorch here has no CUDA (cpu-only build)"

    def not_compiled(device=None):
        raise AssertionError("Torch not compiled with CUDA enabled")

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", not_compiled)
    with pytest.raises(InputError) as err:
        memory.preflight(svd_configs, cfg, "torch", "cuda:0", False)
    assert str(err.value) == "--device cuda: PyTorch here has no CUDA (cpu-only build)"

    def no_gpu(device=None):
        raise RuntimeError("CUDA error: no CUDA-capable device is detected\nmore")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_gpu)
    with pytest.raises(InputError, match=r"^--device cuda:0: PyTorch cannot use it \(CUDA error: no CUDA-capable device is detected\)$"):
        memory.preflight(svd_configs, cfg, "torch", "cuda:0", False)
