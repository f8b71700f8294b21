"""The one onnxruntime session factory and its one CUDA policy.

* ``device="cpu"``: the CPU execution provider (``log_severity_level`` 3: onnxruntime warns about
  fp16 nodes it cannot constant-fold on the CPU).
* ``device="cuda[:N]"``: the CUDA execution provider on device N (options: ``CUDA_OPTIONS``), or
  an :class:`EngineError` that says what to install. Never a silent CPU fallback: asking for CUDA
  and getting the CPU would make a run hundreds of times slower without a word. onnxruntime can
  also *drop* the CUDA provider when creating a session (its CUDA/cuDNN libraries fail to load);
  that is caught here too. (DWPose alone may fall back to the CPU, with a warning:
  ``mimic.pose.detector``.)

One dependency story: ``onnxruntime`` (CPU) and ``onnxruntime-gpu`` (CUDA) install the same
module, and with both installed the last one wins (the CUDA provider may vanish; onnxruntime
issue 26996). The project therefore depends on neither directly: the ``cpu`` extra brings
``onnxruntime``, the ``gpu`` extra ``onnxruntime-gpu``, and :func:`import_onnxruntime` checks the
install on first use: none installed, or both, is a one-line error naming the exact command
(both on a CPU-only run: a warning, since the CPU provider is in either).

onnxruntime is imported lazily (``mimic --help`` and torch-free code never pay for it).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mimic.errors import EngineError, MimicError

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
INSTALL_ADVICE = (
    "install onnxruntime-gpu, and not the CPU `onnxruntime` wheel beside it (both provide the same module; "
    "`pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu`, or `pip install 'mimic-engine[gpu]'` "
    "into an environment without `onnxruntime`)"
)
# CUDA provider options, set explicitly rather than left to onnxruntime's defaults:
# * cudnn_conv_algo_search HEURISTIC: the default, EXHAUSTIVE, benchmarks every cuDNN algorithm for each
#   new conv shape (seconds per shape, paid again for every resolution) and picks by timing, so the
#   chosen algorithm, and the output bits, can change from run to run; cuDNN's heuristic is instant
#   and repeatable;
# * arena_extend_strategy kSameAsRequested: the default grows onnxruntime's arena in powers of two,
#   reserving up to twice what a stage needs, memory torch's caching allocator (same process, same
#   device) then cannot have;
# * do_copy_in_default_stream 1 (onnxruntime's default, pinned): copies on the compute stream; 0 can
#   race (onnxruntime issue 4829);
# * cudnn_conv_use_max_workspace 1 (the default since onnxruntime 1.14, pinned for older ones): lets
#   cuDNN pick its fastest conv algorithm even when it needs a large workspace (the VAE decoder's
#   full-resolution convs).
# CUDA graphs (enable_cuda_graph) stay off: they need every input at a fixed address between runs,
# which the I/O binding of mimic.runtime.backend_ort does not promise.
CUDA_OPTIONS = {
    "cudnn_conv_algo_search": "HEURISTIC",
    "arena_extend_strategy": "kSameAsRequested",
    "do_copy_in_default_stream": "1",
    "cudnn_conv_use_max_workspace": "1",
}
MISSING_ADVICE = ("onnxruntime is not installed: `pip install 'mimic-engine[cpu]'` (the onnxruntime CPU wheel) or "
                  "`pip install 'mimic-engine[gpu]'` (onnxruntime-gpu, for CUDA); never both")
_warned_both = False


def installed_distributions() -> list[str]:
    """Which onnxruntime distributions are installed (package metadata; nothing is imported)."""
    from mimic.fingerprint import package_version

    return [d for d in ORT_DISTRIBUTIONS if package_version(d)]


def import_onnxruntime(device: Any = "cpu"):
    """The onnxruntime module, after the install check for ``device`` (see the module docstring)."""
    global _warned_both
    kind, _ = _device(device)
    dists = installed_distributions()
    try:
        import onnxruntime as ort
    except ImportError as err:
        detail = f" ({', '.join(dists)} installed but broken: {str(err).splitlines()[0][:120]})" if dists else ""
        raise EngineError(MISSING_ADVICE + detail) from None
    if len(dists) > 1:
        msg = f"both {' and '.join(dists)} are installed; they provide the same module and the last one installed wins"
        if kind == "cuda":
            raise EngineError(f"{msg} (the CUDA provider may be gone): {INSTALL_ADVICE}")
        if not _warned_both:
            _warned_both = True
            log.warning(f"{msg}; fine on the CPU, but for CUDA {INSTALL_ADVICE}")
    return ort


def _device(device: Any) -> tuple[str, int]:
    """``("cpu"|"cuda", index)`` of a torch device, a device string or None (= cpu)."""
    if device is None:
        return "cpu", 0
    kind = getattr(device, "type", None)
    if kind is not None:
        return str(kind), int(getattr(device, "index", None) or 0)
    text = str(device)
    kind, _, index = text.partition(":")
    return kind, int(index) if index else 0


def cuda_available() -> bool:
    """True when the installed onnxruntime has the CUDA execution provider."""
    try:
        ort = import_onnxruntime("cuda")
    except EngineError:
        return False

    return CUDA_PROVIDER in ort.get_available_providers()


def providers_for(device: Any) -> list:
    """The provider list for ``device``; EngineError when CUDA is asked for and onnxruntime lacks it."""
    ort = import_onnxruntime(device)
    kind, index = _device(device)
    if kind == "cuda":
        if CUDA_PROVIDER not in ort.get_available_providers():
            raise EngineError(f"onnxruntime {ort.__version__} has no CUDA provider here: {INSTALL_ADVICE}; or use --device cpu")
        return [(CUDA_PROVIDER, {"device_id": index, **CUDA_OPTIONS}), CPU_PROVIDER]
    if kind != "cpu":
        raise EngineError(f"onnxruntime runs on cpu or cuda, not {kind}")
    return [CPU_PROVIDER]


def create_session(path: str | Path, device: Any = "cpu", threads: int | None = None, *, disable_prepacking: bool = False,
                   error: type[MimicError] = EngineError, label: str | None = None):
    """An ``onnxruntime.InferenceSession`` for the graph at ``path`` on ``device``.

    ``threads``: intra-op threads (None = onnxruntime's default). ``disable_prepacking``: no second,
    pre-packed copy of the weights (validation of the full-size UNet on a 24 GB machine).
    A graph onnxruntime cannot load raises ``error`` (EngineError by default) naming ``label``
    (default: the path).
    """
    ort = import_onnxruntime(device)
    providers = providers_for(device)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ORT warns about fp16 nodes it cannot constant-fold on CPU
    if threads:
        opts.intra_op_num_threads = threads
    if disable_prepacking:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    try:
        sess = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as err:  # onnxruntime raises its own untyped errors for bad files
        raise error(f"onnxruntime cannot load {label or path}: {str(err).splitlines()[0][:200] if str(err) else type(err).__name__}") from None
    if _device(device)[0] == "cuda" and CUDA_PROVIDER not in sess.get_providers():
        raise EngineError(f"onnxruntime could not start its CUDA provider for {label or path} (CUDA/cuDNN libraries missing or "
                          f"mismatched?): {INSTALL_ADVICE}; or use --device cpu")
    return sess
