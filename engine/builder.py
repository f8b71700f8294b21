"""The one TensorRT builder code path: ONNX file + profiles + options -> serialized plan bytes.

Works with TensorRT 11 (module ``tensorrt``, target ``"tensorrt"``) and TensorRT-RTX (module
``tensorrt_rtx``, target ``"tensorrt-rtx"``; it builds ahead of time on a CPU-only machine).
Both are strongly typed: precision comes from the ONNX graph (see ``mimic.export.fp16``); no
FP16/INT8/... builder flags exist in TensorRT 11 and none are set here. The deprecated
``STRONGLY_TYPED`` creation flag is only passed to TensorRT 10, where it still matters.

Never creates a TensorRT Runtime (or deserializes anything): on a machine without a GPU that
segfaults at interpreter exit. Engines are loaded by ``mimic.engine.runner``.
"""
from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Mapping, Sequence

from mimic.engine.gpu import TRT_MODULES as TARGET_MODULES  # target -> module name, defined once
from mimic.engine.gpu import gpu_available
from mimic.errors import EngineError
from mimic.files import atomic_write_bytes

log = logging.getLogger(__name__)

_INSTALL_ADVICE = {
    "tensorrt": "install TensorRT 11 from NVIDIA's index (pip install --extra-index-url https://pypi.nvidia.com "
    "tensorrt-cu13, the project's `trt` extra), or build ahead of time with --target tensorrt-rtx",
    "tensorrt-rtx": "install TensorRT-RTX (pip install tensorrt-rtx-cu13, part of the project's `dev` extra)",
}
Shape = Sequence[int]
Profile = Mapping[str, tuple[Shape, Shape, Shape]]
_MAX_LOGGED_WARNINGS = 5


@dataclass(frozen=True)
class BuildOptions:
    target: str = "tensorrt"  # "tensorrt" (TensorRT 11) | "tensorrt-rtx"
    workspace_bytes: int | None = None  # cap on the WORKSPACE pool (8 GiB fixed the 72-frame UNet build, TRT #4360)
    optimization_level: int = 3  # builder optimization level 0-5
    timing_cache: Path | None = None  # loaded if present, saved after a successful build
    refittable: bool = False  # REFIT: weights can be swapped later (e.g. MimicMotion 1.0 <-> 1.1)
    strip_plan: bool = False  # STRIP_PLAN (+ REFIT_IDENTICAL unless refittable): weight-less plan, refit at load
    compute_capabilities: tuple[str, ...] = field(default=())  # TensorRT-RTX only: target SMs ("8.6", ...); () = its default set
    # TensorRT-RTX: BuilderFlag.REQUIRE_USER_ALLOCATION, which stream capture (CUDA graphs) needs
    # (RTX 1.2 release notes: engines then use application-provided memory, as our runner's
    # USER_MANAGED contexts do). Full TensorRT needs no flag for capture.
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        if self.target not in TARGET_MODULES:
            raise EngineError(f"unknown TensorRT target {self.target!r}; choose one of: {', '.join(TARGET_MODULES)}")
        if not 0 <= self.optimization_level <= 5:
            raise EngineError(f"builder optimization level must be 0-5, got {self.optimization_level}")
        if self.workspace_bytes is not None and self.workspace_bytes <= 0:
            raise EngineError(f"workspace limit must be positive, got {self.workspace_bytes}")
        if self.compute_capabilities and self.target != "tensorrt-rtx":
            raise EngineError("compute capability targets are a TensorRT-RTX option (TensorRT builds for the GPU it runs on)")


def load_trt(target: str) -> ModuleType:
    """Import the TensorRT flavour for ``target`` lazily; EngineError with install advice if missing."""
    module = TARGET_MODULES.get(target)
    if module is None:
        raise EngineError(f"unknown TensorRT target {target!r}; choose one of: {', '.join(TARGET_MODULES)}")
    try:
        trt = importlib.import_module(module)
    except (ImportError, OSError) as err:  # OSError: bindings present but their shared libraries are not
        raise EngineError(f"{module} cannot be imported ({str(err).splitlines()[0][:160]}): {_INSTALL_ADVICE[target]}") from None
    if target == "tensorrt" and _major(trt) < 10:
        raise EngineError(f"TensorRT {trt.__version__} is too old: TensorRT 11 (or 10) is needed; {_INSTALL_ADVICE[target]}")
    return trt


def _major(trt: ModuleType) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        return 0


# ------------------------------------------------------------------------------ logging helpers


def _make_logger(trt: ModuleType):
    class _Logger(trt.ILogger):
        """Errors are kept for the exception; warnings are counted and the first few shown."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings = 0
            # TensorRT calls back from its own threads, possibly while holding its locks: the
            # callbacks only append, and the lines are logged by the caller (``_flush``).
            self.lines: list[str] = []

        def log(self, severity, msg) -> None:  # noqa: A003 - TensorRT's name
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(str(msg).strip())
            elif severity == trt.ILogger.Severity.WARNING:
                self.warnings += 1
                if self.warnings <= _MAX_LOGGED_WARNINGS:
                    self.lines.append(f"    [TRT warning] {str(msg).strip()[:300]}")

    return _Logger()


def _make_progress(trt: ModuleType):
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Progress(trt.IProgressMonitor):
        """One line when a top-level build phase starts and when it ends."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._start: dict[str, float] = {}
            self._top: set[str] = set()
            self.lines: list[str] = []  # logged by the caller (see _make_logger)

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            if parent_phase is None:
                self._top.add(phase_name)
                self._start[phase_name] = time.perf_counter()
                self.lines.append(f"    build phase: {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step) -> bool:
            return True

        def phase_finish(self, phase_name) -> None:
            if phase_name in self._top:
                self._top.discard(phase_name)
                self.lines.append(f"    build phase done: {phase_name} ({time.perf_counter() - self._start.pop(phase_name, time.perf_counter()):.1f} s)")

    return _Progress()


# ---------------------------------------------------------------------------- flavour adapters


def _network_flags(trt: ModuleType, target: str) -> int:
    """TensorRT 11 and TensorRT-RTX are always strongly typed (the flag is deprecated and ignored);
    TensorRT 10 needs it, or the FP16 graph's precision would be a mere hint."""
    if target == "tensorrt" and _major(trt) < 11 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def builder_flags(trt: ModuleType, options: BuildOptions) -> list[str]:
    """Names of the ``BuilderFlag`` s a build sets (no precision flags: the graphs are strongly typed)."""
    flags = []
    if options.refittable:
        flags.append("REFIT")
    if options.strip_plan:
        flags.append("STRIP_PLAN")
        if not options.refittable:  # weights come back at load time, identical to the build's
            flags.append("REFIT_IDENTICAL")
    if options.cuda_graphs and options.target == "tensorrt-rtx":
        if not hasattr(trt.BuilderFlag, "REQUIRE_USER_ALLOCATION"):
            raise EngineError(f"{trt.__name__} {trt.__version__} lacks BuilderFlag.REQUIRE_USER_ALLOCATION (CUDA graphs need "
                              "TensorRT-RTX >= 1.2); upgrade it or build with cuda_graphs=False")
        flags.append("REQUIRE_USER_ALLOCATION")
    return flags


def check_compute_capabilities(trt: ModuleType, sms: tuple[str, ...]) -> list:
    """The TensorRT-RTX ``ComputeCapability`` members of ``sms`` ("8.6", ...); EngineError naming the
    supported ones for an SM this TensorRT cannot target (checked before any export or build)."""
    if not sms:
        return []
    enum = getattr(trt, "ComputeCapability", None)
    if enum is None:
        raise EngineError(f"this {trt.__name__} cannot target compute capabilities")
    values = []
    for sm in sms:
        member = getattr(enum, "SM" + sm.replace(".", ""), None)
        if member is None:
            known = [n[2:-1] + "." + n[-1] for n in enum.__members__ if n.startswith("SM")]
            raise EngineError(f"{trt.__name__} cannot target compute capability {sm}; it supports {', '.join(known)}")
        values.append(member)
    return values


def _set_compute_capabilities(trt: ModuleType, config, sms: tuple[str, ...]) -> None:
    if not sms:
        return
    if not hasattr(config, "set_compute_capability"):
        raise EngineError(f"this {trt.__name__} cannot target compute capabilities")
    values = check_compute_capabilities(trt, sms)
    config.num_compute_capabilities = len(values)
    for i, v in enumerate(values):
        config.set_compute_capability(v, i)


def _load_timing_cache(config, path: Path | None):
    if path is None:
        return None
    if not hasattr(config, "create_timing_cache"):
        log.info("    timing cache: not supported by this TensorRT flavour, ignored")
        return None
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    if data:
        log.info(f"    timing cache: loaded {len(data)} bytes from {Path(path).name}")
    cache = config.create_timing_cache(data)
    if cache is None and data:  # unreadable cache (other version/GPU): start a fresh one
        log.info("    timing cache: unreadable, starting a new one")
        cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        log.info("    timing cache: could not be attached, ignored")
        return None
    return cache


def _save_timing_cache(config, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    data = bytes(memoryview(cache.serialize()))
    if not data:  # nothing was timed (e.g. a TensorRT-RTX build without a GPU): keep any old cache
        return
    path = Path(path)
    atomic_write_bytes(path, data)  # concurrent builders never see half a cache
    log.info(f"    timing cache: saved {len(data)} bytes to {path.name}")


def _parser_errors(parser) -> list[str]:
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = ""
        try:
            name, op = err.node_name(), err.node_operator()
            if name or op:
                where = f"node {name or '?'} ({op or '?'}): "
        except Exception:  # older parsers lack node_name/node_operator
            pass
        out.append(f"{where}{str(err.desc()).strip()}")
    return out


def _check_profiles(network, profiles: Sequence[Profile]) -> None:
    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
    dynamic = {n for n, s in inputs.items() if any(d < 0 for d in s)}
    if dynamic and not profiles:
        raise EngineError(f"the network has dynamic inputs ({', '.join(sorted(dynamic))}) but no optimization profile was given")
    for k, prof in enumerate(profiles):
        unknown = sorted(set(prof) - set(inputs))
        if unknown:
            raise EngineError(f"profile {k} names inputs the network lacks: {', '.join(unknown)} (network inputs: {', '.join(inputs)})")
        missing = sorted(dynamic - set(prof))
        if missing:
            raise EngineError(f"profile {k} lacks shapes for dynamic input(s) {', '.join(missing)}")
        for name, (mn, opt, mx) in prof.items():
            net_shape = inputs[name]
            for label, shp in (("min", mn), ("opt", opt), ("max", mx)):
                if len(shp) != len(net_shape) or any(d >= 0 and d != s for d, s in zip(net_shape, shp)):
                    raise EngineError(f"profile {k}: {label} shape {tuple(shp)} of input {name} does not fit the network's {net_shape}")
            if not all(a <= b <= c for a, b, c in zip(mn, opt, mx)):
                raise EngineError(f"profile {k}: input {name} needs min <= opt <= max, got {tuple(mn)} / {tuple(opt)} / {tuple(mx)}")


# ------------------------------------------------------------------------------------ the build


def build_serialized_engine(onnx_path: Path | str, profile: Profile | None, options: BuildOptions = BuildOptions()) -> bytes:
    """Parse ``onnx_path`` (external data is found beside it), add the one optimization ``profile``
    (``{input: (min, opt, max)}``; None for a static graph), build, and return the serialized plan.
    Progress goes to this module's logger."""
    callbacks: list = []
    try:
        return _build(onnx_path, profile, options, callbacks)
    finally:
        for cb in callbacks:
            for line in cb.lines:
                log.info(line)


def _build(onnx_path: Path | str, profile: Profile | None, options: BuildOptions, callbacks: list) -> bytes:
    profiles: list[Profile] = [] if profile is None else [profile]
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX model not found: {onnx_path}")
    trt = load_trt(options.target)
    t0 = time.perf_counter()
    logger = _make_logger(trt)
    callbacks.append(logger)
    builder = trt.Builder(logger)
    if builder is None:
        raise EngineError(f"{trt.__name__} could not create a builder: {'; '.join(logger.errors) or 'no GPU/driver?'}")
    network = builder.create_network(_network_flags(trt, options.target))
    parser = trt.OnnxParser(network, logger)

    log.info(f"  parse {onnx_path.name}")
    if not parser.parse_from_file(str(onnx_path)):
        errors = _parser_errors(parser) or logger.errors or ["unknown parser error"]
        raise EngineError(f"cannot parse {onnx_path.name}: " + " | ".join(errors[:10]) + (f" (+{len(errors) - 10} more)" if len(errors) > 10 else ""))
    _check_profiles(network, profiles)

    config = builder.create_builder_config()
    config.builder_optimization_level = options.optimization_level
    if options.workspace_bytes is not None:
        if options.target == "tensorrt-rtx" and not gpu_available():
            # Measured (TensorRT-RTX 1.7): with a pool limit set, the CPU-only ahead-of-time build tries
            # to reserve the workspace on a device and fails (cudaError 35 + OutOfMemory).
            log.info("    workspace cap: ignored for a TensorRT-RTX build without a GPU (it would try to reserve it)")
        else:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))
    for flag in builder_flags(trt, options):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if options.target == "tensorrt-rtx":
        _set_compute_capabilities(trt, config, options.compute_capabilities)
    for prof in profiles:
        p = builder.create_optimization_profile()
        for name, (mn, opt, mx) in prof.items():
            p.set_shape(name, tuple(int(d) for d in mn), tuple(int(d) for d in opt), tuple(int(d) for d in mx))
        if config.add_optimization_profile(p) < 0:
            raise EngineError(f"TensorRT rejected an optimization profile: {'; '.join(logger.errors[-3:]) or prof}")
    monitor = _make_progress(trt)
    if monitor is not None:
        callbacks.insert(0, monitor)
        config.progress_monitor = monitor
    cache = None
    if options.timing_cache is not None and options.target == "tensorrt-rtx" and not gpu_available():
        log.info("    timing cache: not used by a TensorRT-RTX build without a GPU (nothing is timed)")
    else:
        cache = _load_timing_cache(config, options.timing_cache)

    log.info(f"  build {onnx_path.name} ({trt.__name__} {trt.__version__}, level {options.optimization_level}, {len(profiles)} profile(s))")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "; ".join(logger.errors[-5:]) or "no error message from TensorRT"
        raise EngineError(f"TensorRT could not build {onnx_path.name}: {detail}")
    plan = bytes(memoryview(serialized))
    del serialized
    if cache is not None and options.timing_cache is not None:
        _save_timing_cache(config, options.timing_cache)
    extra = f", {logger.warnings} TensorRT warnings" if logger.warnings else ""
    log.info(f"  built {onnx_path.name}: {len(plan) / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s{extra}")
    return plan
