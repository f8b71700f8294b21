"""The engine store: one folder of ``<stage>.plan`` + ``<stage>.manifest.json`` pairs.

- Publishing is atomic (the design notes on reliability, B4; not in this repository): the old manifest is removed first, the plan is written
  with ``mimic.files.atomic_write_bytes`` (temp file in the same folder, fsync, rename), and the
  manifest (the commit marker) is written the same way *last*. A crash leaves "missing", never "torn".
- ``lookup(stage, key)`` answers "is an up-to-date engine already here?" (same key, plan intact).
- ``verify(stage, runtime)`` runs *before* any deserialization (the design notes on reliability, B2; not in this repository): manifest vs the
  running TensorRT flavour/version and GPU, then plan size and sha256. Every failure is an
  ``EngineError`` with one line that says what differs and how to rebuild.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from mimic import fingerprint
from mimic.engine.cache_key import sha256_bytes
from mimic.engine.gpu import RuntimeInfo
from mimic.errors import EngineError
from mimic.files import atomic_write_bytes, atomic_write_text, file_lock, fsync_dir

MANIFEST_SCHEMA = 1
PLAN_SUFFIX = ".plan"
MANIFEST_SUFFIX = ".manifest.json"
TEMP_GLOB = ".*.part*"  # mimic.files.temp_path names: .NAME.PID.part.EXT
_STAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CHUNK = 1 << 20


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


REBUILD_FIELD = "rebuild_args"  # manifest field: the build-engines options that made the engine (engine/build.py)
DATACENTER_SMS = ("9.0", "10.0", "10.3")  # H100/H200, B200/B300: TensorRT-RTX does not target them (README)


def rebuild_command(root: Path, manifest: Mapping[str, Any] | None = None, compute_capability: str | None = None) -> str | None:
    """``mimic build-engines --out ROOT`` plus the options the engines in ROOT were built with (from
    ``manifest``, else from any readable manifest in ROOT), so the command works when pasted; None
    when no manifest records them. ``compute_capability``: target this GPU instead of the recorded
    SMs (TensorRT-RTX; a data-centre GPU gets ``--target tensorrt``)."""
    import shlex

    args = (manifest or {}).get(REBUILD_FIELD)
    if not isinstance(args, list):
        args = _recorded_args(Path(root))
    if args is None:
        return None
    if compute_capability is not None:
        args = _without(args, "--compute-capability")
        if str(compute_capability) in DATACENTER_SMS:  # no TensorRT-RTX target: build with TensorRT on that GPU
            args = _without(args, "--target") + ["--target", "tensorrt"]
        else:
            args = args + ["--compute-capability", str(compute_capability)]
    return shlex.join(["mimic", "build-engines", "--out", str(root), *map(str, args)])


def _without(args: list, flag: str) -> list:
    """``args`` without every ``flag VALUE`` pair."""
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        else:
            kept.append(a)
    return kept


def _recorded_args(root: Path) -> list | None:
    if not root.is_dir():
        return None
    for path in sorted(root.glob("*" + MANIFEST_SUFFIX)):
        try:
            args = json.loads(path.read_text()).get(REBUILD_FIELD)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(args, list):
            return args
    return None


def build_hint(root: Path, manifest: Mapping[str, Any] | None = None, compute_capability: str | None = None, verb: str = "rebuild") -> str:
    """``rebuild with `<the recorded command>``` (or, with nothing recorded, the command to complete)."""
    command = rebuild_command(root, manifest, compute_capability)
    if command is not None:
        return f"{verb} with `{command}`"
    import shlex

    out = shlex.quote(str(root))
    return (f"{verb} with `mimic build-engines --out {out} --preset NAME` or `mimic build-engines --out {out} --weights DIR` "
            "(add --target tensorrt-rtx for an ahead-of-time RTX build)")


def _rebuild_hint(root: Path, manifest: Mapping[str, Any] | None = None, compute_capability: str | None = None) -> str:
    return build_hint(root, manifest, compute_capability)


def _trt_name(flavour: str) -> str:
    return "TensorRT-RTX" if flavour == "tensorrt-rtx" else "TensorRT"


def _sm(cc: str) -> str:
    return "sm_" + str(cc).replace(".", "")


def _cc_tuple(cc: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(cc).split("."))


@dataclass(frozen=True)
class VerifiedPlan:
    """A plan whose manifest matches this machine and whose bytes match the manifest."""

    stage: str
    manifest: dict
    plan: bytes
    path: Path


class EngineStore:
    """``<root>/<stage>.plan`` + ``<root>/<stage>.manifest.json``, plus ``timing-cache/``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ------------------------------------------------------------------------------------ paths

    def _check_stage(self, stage: str) -> str:
        if not _STAGE_RE.match(stage or ""):
            raise EngineError(f"invalid engine stage name {stage!r}")
        return stage

    def plan_path(self, stage: str) -> Path:
        return self.root / (self._check_stage(stage) + PLAN_SUFFIX)

    def manifest_path(self, stage: str) -> Path:
        return self.root / (self._check_stage(stage) + MANIFEST_SUFFIX)

    def timing_cache_path(self, flavour: str, version: str, compute_capability: str | None) -> Path:
        """One timing cache per (flavour, version, GPU arch): caches do not travel between targets."""
        arch = _sm(compute_capability) if compute_capability else "aot"
        return self.root / "timing-cache" / f"{flavour}-{version}-{arch}.cache"

    def stages(self) -> list[str]:
        """Stages that have a manifest (published engines), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name[: -len(MANIFEST_SUFFIX)] for p in self.root.iterdir() if p.name.endswith(MANIFEST_SUFFIX) and not p.name.startswith("."))

    def orphan_plans(self) -> list[str]:
        """Stages with a plan but no manifest (an interrupted copy, a deleted manifest): never used."""
        if not self.root.is_dir():
            return []
        published = set(self.stages())
        plans = (p.name[: -len(PLAN_SUFFIX)] for p in self.root.iterdir() if p.name.endswith(PLAN_SUFFIX) and not p.name.startswith("."))
        return sorted(s for s in plans if s not in published)

    # ---------------------------------------------------------------------------------- reading

    def read_manifest(self, stage: str) -> dict | None:
        """The manifest of ``stage``; None when there is none; EngineError when it is unreadable."""
        path = self.manifest_path(stage)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise EngineError(f"cannot read engine manifest {path}: {exc.strerror or exc}") from None
        try:
            manifest = json.loads(text)
        except ValueError:
            raise EngineError(f"engine manifest {path} is corrupt (not valid JSON); {_rebuild_hint(self.root)}") from None
        if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
            raise EngineError(f"engine manifest {path} has an unknown format (schema {manifest.get('schema') if isinstance(manifest, dict) else '?'}, "
                              f"expected {MANIFEST_SCHEMA}); {_rebuild_hint(self.root)}")
        for field in ("stage", "cache_key", "key_inputs", "plan", "tensorrt", "gpu"):
            if field not in manifest:
                raise EngineError(f"engine manifest {path} lacks '{field}'; {_rebuild_hint(self.root)}")
        return manifest

    def _plan_digest(self, path: Path) -> tuple[int, str]:
        import hashlib

        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            while chunk := f.read(64 * _CHUNK):
                h.update(chunk)
                size += len(chunk)
        return size, h.hexdigest()

    def lookup(self, stage: str, key: str, check_hash: bool = True) -> dict | None:
        """The manifest when an up-to-date engine for ``key`` is published and intact, else None.

        Never raises for a stale, corrupt or missing entry (the caller rebuilds it).
        """
        try:
            manifest = self.read_manifest(stage)
        except EngineError:
            return None
        if manifest is None or manifest.get("cache_key") != key:
            return None
        plan = self.plan_path(stage)
        try:
            want = manifest["plan"]
            if plan.stat().st_size != int(want["size"]):
                return None
            if check_hash and self._plan_digest(plan)[1] != want["sha256"]:
                return None
        except (OSError, KeyError, TypeError, ValueError):
            return None
        return manifest

    # ---------------------------------------------------------------------------------- writing

    @contextlib.contextmanager
    def lock(self, stage: str) -> Iterator[None]:
        """An exclusive per-stage lock around build + publish (two build-engines never race)."""
        with file_lock(self.root / f".{self._check_stage(stage)}.lock"):
            yield

    def publish(
        self,
        stage: str,
        plan: bytes | bytearray | memoryview,
        key: str,
        key_inputs: Mapping[str, Any],
        *,
        onnx: Mapping[str, Any] | None = None,
        build_seconds: float | None = None,
        io: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict:
        """Publish ``plan`` for ``stage`` atomically and return its manifest.

        Order: remove the old manifest (the entry now reads as "missing"), replace the plan, write
        the manifest last (it is the commit marker).
        """
        view = memoryview(plan).cast("B")
        if view.nbytes == 0:
            raise EngineError(f"refusing to publish an empty plan for stage '{stage}'")
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "stage": stage,
            "cache_key": key,
            "key_inputs": dict(key_inputs),
            "plan": {"file": self.plan_path(stage).name, "size": view.nbytes, "sha256": sha256_bytes(view)},
            "tensorrt": dict(key_inputs["tensorrt"]),
            "gpu": dict(key_inputs["gpu"]),
            "onnx": dict(onnx) if onnx is not None else None,
            "io": io,
            "build": {
                "seconds": None if build_seconds is None else round(float(build_seconds), 3),
                "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "tools": tool_versions(key_inputs["tensorrt"]),
        }
        if extra:
            manifest.update(dict(extra))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.manifest_path(stage))
            fsync_dir(self.root)
        atomic_write_bytes(self.plan_path(stage), view)
        _write_json(self.manifest_path(stage), manifest)
        return manifest

    def clean_temps(self, older_than_s: float = 3600.0) -> list[Path]:
        """Delete temporary files left by killed writers (older than ``older_than_s``)."""
        removed = []
        if not self.root.is_dir():
            return removed
        now = time.time()
        for p in self.root.glob(TEMP_GLOB):
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > older_than_s:
                    p.unlink()
                    removed.append(p)
        return removed

    # --------------------------------------------------------------------------------- checking

    def check_compatible(self, stage: str, manifest: Mapping[str, Any], runtime: RuntimeInfo, strict_gpu_name: bool = True,
                         require_gpu: bool = True) -> None:
        """Raise EngineError when the plan was built for another TensorRT or GPU than ``runtime``.

        ``require_gpu=False`` (checks on a machine without a GPU) skips the GPU comparison when
        ``runtime.gpu`` is None; the TensorRT flavour/version is always compared.
        """
        hint = _rebuild_hint(self.root, manifest)
        built_trt = manifest["tensorrt"]
        flavour, version = built_trt["flavour"], built_trt["version"]
        built_gpu = manifest["gpu"]
        built_desc = f"{_trt_name(flavour)} {version} for {describe_gpu_target(built_gpu)}"
        where = f"engine '{stage}' in {self.root}"

        if runtime.trt is None:
            raise EngineError(f"{where} was built with {_trt_name(flavour)} {version}, which is not installed here; "
                              f"install it or {hint}")
        run = runtime.trt
        if run.flavour != flavour:
            raise EngineError(f"{where} was built with {built_desc}, but this machine loads engines with {run.describe()}; {hint}")
        if run.version != version and not _version_compatible(manifest, version, run.version):
            raise EngineError(f"{where} was built with {built_desc}; this machine runs {run.describe()} "
                              f"(TensorRT version differs: {version} vs {run.version}); {hint}")

        gpu = runtime.gpu
        if gpu is None:
            if not require_gpu:
                return
            raise EngineError(f"loading {where} needs an NVIDIA GPU; none was found on this machine")
        if flavour == "tensorrt-rtx":
            targets = built_gpu.get("compute_capability") or []
            targets = [targets] if isinstance(targets, str) else list(targets)
            if gpu.compute_capability not in targets:
                raise EngineError(f"{where} was built with {built_desc}; this GPU is {gpu.describe()}, "
                                  f"which is not among the plan's targets; {_rebuild_hint(self.root, manifest, gpu.compute_capability)}")
            return
        built_cc = str(built_gpu.get("compute_capability"))
        if built_cc != gpu.compute_capability:
            raise EngineError(f"{where} was built with {built_desc}; this machine has {gpu.describe()} "
                              f"(compute capability differs: {built_cc} vs {gpu.compute_capability}); {hint}")
        if strict_gpu_name and built_gpu.get("name") != gpu.name:
            raise EngineError(f"{where} was built with {built_desc}; this machine has {gpu.describe()} "
                              f"(GPU model differs: {built_gpu.get('name')} vs {gpu.name}); {hint}")

    def check_plan(self, stage: str, manifest: Mapping[str, Any]) -> bytes:
        """The plan bytes, after checking size and sha256 against the manifest."""
        path = self.plan_path(stage)
        hint = _rebuild_hint(self.root, manifest)
        try:
            want_size = int(manifest["plan"]["size"])
            want_sha = str(manifest["plan"]["sha256"])
        except (KeyError, TypeError, ValueError):
            raise EngineError(f"engine manifest {self.manifest_path(stage)} has no valid plan size/sha256; {hint}") from None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise EngineError(f"engine plan {path} is missing (its manifest exists); {hint}") from None
        except OSError as exc:
            raise EngineError(f"cannot read engine plan {path}: {exc.strerror or exc}") from None
        if len(data) != want_size:
            kind = "truncated" if len(data) < want_size else "corrupt"
            raise EngineError(f"engine plan {path} is {kind} ({len(data)} bytes, manifest says {want_size}); {hint}")
        if sha256_bytes(data) != want_sha:
            raise EngineError(f"engine plan {path} is corrupt (sha256 differs from its manifest); {hint}")
        return data

    def verify(self, stage: str, runtime: RuntimeInfo, strict_gpu_name: bool = True, require_gpu: bool = True) -> VerifiedPlan:
        """Everything checked before deserializing: manifest present and readable, built for this
        TensorRT and GPU, plan intact. Returns the verified bytes (deserialize exactly these).

        ``require_gpu=False``: a check without a GPU (the GPU comparison is skipped when none is found).
        """
        manifest = self.read_manifest(stage)
        if manifest is None:
            what = "no engine" if not self.plan_path(stage).exists() else f"an engine without a manifest ({self.plan_path(stage).name})"
            raise EngineError(f"{what} for stage '{stage}' in {self.root}; {build_hint(self.root, verb='build it')}")
        if manifest.get("stage") != stage:
            raise EngineError(f"engine manifest {self.manifest_path(stage)} is for stage '{manifest.get('stage')}', not '{stage}'; {_rebuild_hint(self.root, manifest)}")
        self.check_compatible(stage, manifest, runtime, strict_gpu_name=strict_gpu_name, require_gpu=require_gpu)
        data = self.check_plan(stage, manifest)
        return VerifiedPlan(stage=stage, manifest=manifest, plan=data, path=self.plan_path(stage))


def describe_gpu_target(gpu: Mapping[str, Any]) -> str:
    cc = gpu.get("compute_capability")
    if isinstance(cc, (list, tuple)):
        return "GPUs " + "/".join(_sm(c) for c in cc)
    return f"{gpu.get('name')} ({_sm(cc)})"


def _version_compatible(manifest: Mapping[str, Any], built: str, running: str) -> bool:
    """A VERSION_COMPATIBLE plan runs on the same or a later minor of the same major (TRT 11.x)."""
    options = (manifest.get("key_inputs", {}).get("build", {}) or {}).get("options", {}) or {}
    if not options.get("version_compatible"):
        return False
    try:
        b, r = _cc_tuple(built), _cc_tuple(running)
    except ValueError:
        return False
    return b[0] == r[0] and r >= b


def tool_versions(trt: Mapping[str, Any] | None = None) -> dict:
    """The tools a plan was built with (recorded in its manifest; not part of the cache key)."""
    versions = {
        "python": fingerprint.python_version(),
        "mimic": fingerprint.package_version("mimic-engine"),
        "onnx": fingerprint.package_version("onnx"),
        "torch": fingerprint.package_version("torch"),
        "cuda-bindings": fingerprint.package_version("cuda-bindings"),
    }
    if trt:
        versions[str(trt["flavour"])] = str(trt["version"])
    return versions
