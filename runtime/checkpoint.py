"""Resumable jobs: the latents after denoising step k, saved atomically, so an interrupted job (a
killed process, a lost node, a pre-empted machine, Ctrl-C) continues where it stopped.

What a checkpoint holds (one folder per job: ``OUT.checkpoint/`` beside the output, or under
``--checkpoint-dir``):

* ``latents_KKKK.bin``: the raw bytes of the fused latents after step KKKK (written first);
* ``checkpoint.json``: the step index, the tensor's shape and dtype, the sha256 of the latents file,
  the seed, and the job's key: a sha256 of the input files' bytes, the job's settings and the weights
  with the backend, precision, device kind and GPU model: what changes the bits, not the worker
  count (written second, so it never names a file that is not complete).

Why this is all the state there is: in ``generate()`` steps 1-5 (inputs, poses, embedding,
reference latents, conditioning and the seeded noise) are deterministic for the job's seed and are
simply recomputed, and denoising draws no random numbers after step 5; the scheduler's state is the
step index. So ``generate(..., resume=(k, latents))`` renders frames byte-identical to an
uninterrupted run. A checkpoint whose key does not match (other inputs, settings, seed or weights)
is ignored with a warning and replaced; the folder is removed once the job's output is published.
A checkpoint that cannot be written (full disk) is a warning, never a failed job. Every such warning
is in the job's report too.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mimic.files import atomic_write_bytes, atomic_write_text
from mimic.model.config import GenerationConfig
from mimic.runtime.admission import AdmittedJob
from mimic.runtime.jobs import Job
from mimic.runtime.pipeline import Components, Hooks, JobControl, generate
from mimic.runtime.report import JobReport

log = logging.getLogger(__name__)

FORMAT = 2  # 2: CUDA jobs draw their noise on the device (runtime/determinism.py); a format-1 GPU checkpoint would not resume the same job
MANIFEST = "checkpoint.json"
_SAMPLE = 1 << 20  # weights files: size + first and last MiB (a 3 GB checkpoint is not re-read per job)


# ------------------------------------------------------------------------------------ job keys


def _hash_file(h, path: Path, sample: int | None = None) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}:".encode())
    with open(path, "rb") as f:
        if sample is None or size <= 2 * sample:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        else:
            h.update(f.read(sample))
            f.seek(size - sample)
            h.update(f.read(sample))


def _hash_path(h, path: Path, sample: int | None = None) -> None:
    path = Path(path)
    if path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(str(p.relative_to(path)).encode())
            _hash_file(h, p, sample)
    elif path.is_file():
        _hash_file(h, path, sample)
    else:
        h.update(f"missing:{path}".encode())


def inputs_digest(job: Job) -> str:
    """sha256 over the bytes of every input file of the job (a folder of pose frames: every file)."""
    h = hashlib.sha256()
    for name, path in job.input_paths().items():
        h.update(name.encode())
        _hash_path(h, path)
    return h.hexdigest()


def device_identity(device: str) -> str:
    """What of a ``--device`` list changes a job's bits: the device kind, and on CUDA the GPU models.
    Not the worker count or the indices: workers of one model give the one-device bits
    (``runtime/parallel.py``), so a ``cpu`` checkpoint resumes under ``cpu,cpu`` and back. Mixed
    GPU models: the models in worker order (which windows each one computes)."""
    entries = [d.strip() for d in str(device).split(",") if d.strip()]
    kinds = sorted({d.partition(":")[0] for d in entries})
    if kinds != ["cuda"]:
        return ",".join(kinds)
    models = [_gpu_model(d) for d in entries]
    return "cuda:" + (models[0] if len(set(models)) == 1 else ",".join(models))


def _gpu_model(device: str) -> str:
    """The GPU's name (``NVIDIA H100 80GB HBM3``), or ``?`` where PyTorch cannot tell."""
    try:
        if not torch.cuda.is_available():
            return "?"
        index = torch.device(device).index
        return torch.cuda.get_device_name(torch.cuda.current_device() if index is None else index)
    except (AssertionError, RuntimeError):
        return "?"


def weights_fingerprint(layout, facts: dict | None = None) -> str:
    """Identity of the weights a backend was loaded from (sizes plus the first and last MiB of every
    file, so it is the same on every node of a farm reading the same files) and of the backend,
    device (``device_identity``: kind and GPU model) and precision (their outputs differ in the last bits)."""
    h = hashlib.sha256()
    for name in ("svd", "checkpoint", "det_model", "pose_model"):
        value = getattr(layout, name, None)
        h.update(name.encode())
        if value is not None and Path(str(value)).exists():
            _hash_path(h, Path(str(value)), _SAMPLE)
        else:
            h.update(str(value).encode())  # a hub id
    facts = facts or {}
    device = device_identity(facts.get("device", ""))
    h.update(json.dumps([facts.get("backend"), device, facts.get("precision")]).encode())
    return h.hexdigest()


def job_key(job: Job, components: Components, weights_key: str, config: GenerationConfig | None = None) -> str:
    """sha256 of (inputs, settings, weights): a checkpoint is only used for the very same render."""
    config = config or job.config(components.base_config)
    data = {"format": FORMAT, "inputs": inputs_digest(job), "config": config.to_dict(), "pad_short": components.pad_short, "weights": weights_key}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def checkpoint_dir(job: Job, root: Path | None = None) -> Path:
    """``OUT.checkpoint/`` beside the output, or its folder under ``root`` (``Job.output_paths``)."""
    return job.output_paths(root)["checkpoint"]


# ------------------------------------------------------------------------------------- storage


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


class CheckpointStore:
    """One job's checkpoint folder: ``save`` after a step, ``load`` at start, ``remove`` when done."""

    def __init__(self, folder: Path, key: str, seed: int | None = None):
        self.folder, self.key, self.seed = Path(folder), key, seed
        self.disabled = False  # set after a failed write: the job goes on without checkpoints
        self.save_seconds: list[float] = []
        self.warnings: list[str] = []  # every warning printed, for the job's report

    def _warn(self, message: str) -> None:
        """Print ``message`` and keep it for the job's report (README: every warning printed for a job)."""
        log.warning(f"warning: {message}")
        self.warnings.append(message)

    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST

    def save(self, step: int, num_steps: int, latents: torch.Tensor) -> bool:
        """Write the latents after ``step`` (data file first, then the manifest naming it); False
        (with a warning, once) when it cannot be written."""
        if self.disabled:
            return False
        t0 = time.perf_counter()
        host = latents.detach().to("cpu").contiguous()
        data = host.view(torch.uint8).numpy().tobytes() if host.numel() else b""
        name = f"latents_{step:04d}.bin"
        manifest = {
            "format": FORMAT, "key": self.key, "step": step, "num_steps": num_steps, "seed": self.seed,
            "file": name, "sha256": hashlib.sha256(data).hexdigest(), "shape": list(host.shape), "dtype": str(host.dtype),
        }
        try:
            atomic_write_bytes(self.folder / name, data)
            atomic_write_text(self.manifest, json.dumps(manifest, indent=1) + "\n")
        except OSError as err:
            self.disabled = True
            self._warn(f"cannot write checkpoint in {self.folder} ({err.strerror or err}); the job goes on without checkpoints")
            self._drop_incomplete()
            return False
        for old in self.folder.glob("latents_*.bin"):
            if old.name != name:
                old.unlink(missing_ok=True)
        self.save_seconds.append(time.perf_counter() - t0)
        return True

    def load(self) -> tuple[int, torch.Tensor] | None:
        """(step, latents) of a checkpoint made for this very job; None when there is none (a
        foreign, stale or damaged one is ignored with a warning)."""
        if not self.manifest.is_file():
            return None
        try:
            manifest = json.loads(self.manifest.read_text())
            if manifest.get("format") != FORMAT or manifest.get("key") != self.key:
                self._warn(f"ignoring the checkpoint in {self.folder}: it was made for other inputs, settings or weights; starting over")
                return None
            data = (self.folder / manifest["file"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
                raise ValueError("its latents file does not match its checksum")
            dtype, shape = _dtype(manifest["dtype"]), tuple(manifest["shape"])
            latents = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape(shape) if data else torch.empty(shape, dtype=dtype)
            return int(manifest["step"]), latents
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            self._warn(f"ignoring the damaged checkpoint in {self.folder} ({err}); starting over")
            return None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _drop_incomplete(self) -> None:
        """After a failed write: keep an earlier complete checkpoint, else leave nothing behind."""
        if not self.manifest.is_file():
            self.remove()


class CheckpointHooks(Hooks):
    """An observer that saves the latents every ``every`` steps (and after the last one, so a job
    killed while decoding skips all of denoising); first among a job's observers, so the others see
    a step only once it is saved. A job that saves checkpoints promises that its resumed run gives
    the same bits: its ``control`` is ``deterministic``."""

    control = JobControl(deterministic=True)

    def __init__(self, store: CheckpointStore, every: int = 1, resumable: tuple[bool, ...] | None = None):
        if every < 1:
            raise ValueError("checkpoint interval must be >= 1 step")
        self.store, self.every, self.resumable = store, every, resumable
        self._saved: int | None = None  # the step of the last save (None: none yet in this process)

    def on_step_end(self, step: int, num_steps: int, latents: torch.Tensor) -> None:
        """Saves every ``every`` steps and after the last one. With deep-feature caching
        (``resumable``: per steps done, whether a resumed process continues bit for bit) only where
        the next step is a full pass: the first such step once ``every`` steps have passed."""
        if self._saved is None:  # this process's first step (after a resume: the one after the checkpoint)
            self._saved = step - 1
        if self.resumable is None or all(self.resumable):
            due = step % self.every == 0
        else:
            if not self.resumable[step]:
                return
            due = step - self._saved >= self.every
        if due or step == num_steps:
            self.store.save(step, num_steps, latents)
            self._saved = step


# ------------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class CheckpointPolicy:
    """How jobs checkpoint and resume: ``every`` N steps (0: never save), into ``folder`` (None:
    beside each output), resuming from a matching checkpoint unless ``resume`` is False.
    ``weights_key``: ``weights_fingerprint(layout, facts)`` of the loaded backend."""

    every: int = 1
    folder: Path | None = None
    resume: bool = True
    weights_key: str = ""

    def __post_init__(self) -> None:
        if self.every < 0:
            from mimic.errors import InputError

            raise InputError(f"--checkpoint-every must be >= 0 (0: no checkpoints), got {self.every}")
        if self.folder is not None and not isinstance(self.folder, Path):
            object.__setattr__(self, "folder", Path(os.fspath(self.folder)))

    def store(self, components: Components, job: Job, config: GenerationConfig | None = None) -> CheckpointStore:
        """``config``: the job's resolved settings (admission's), else ``job.config(components.base_config)``."""
        config = config or job.config(components.base_config)
        return CheckpointStore(checkpoint_dir(job, self.folder), job_key(job, components, self.weights_key, config), config.seed)


def generate_resumable(components: Components, job: Job | AdmittedJob, policy: CheckpointPolicy, *, hooks=None, control: JobControl | None = None,
                       stream=None, render=generate) -> JobReport:
    """``generate()`` with checkpoints: resume from the job's last matching checkpoint (the report
    says ``resumed_from_step``), save every ``policy.every`` steps (``CheckpointHooks`` before
    ``hooks``), remove the folder once the output and its report are published. A failed or
    interrupted job keeps its checkpoint. The store's warnings (a foreign or damaged checkpoint, a
    failed write) go into the job's report. ``render``: the pipeline function (``generate``; the
    executor passes the one it uses)."""
    plain, config = (job.job, job.config) if isinstance(job, AdmittedJob) else (job, None)
    store = policy.store(components, plain, config)
    resume = None
    if policy.resume:
        resume = store.load()
    elif store.folder.exists():
        store.remove()  # --no-resume: start over
    if resume is not None:
        log.info(f"resuming {plain.out} from its checkpoint after step {resume[0]} ({store.folder})")
    if policy.every:
        from mimic.runtime.denoise import resume_points

        resolved = config or plain.config(components.base_config)
        saver = CheckpointHooks(store, policy.every, resume_points(resolved, components.info.scheduler))
        hooks, control = [saver, hooks], JobControl.join(control, saver.control)
    report = render(components, job, hooks=hooks, control=control, stream=stream, resume=resume, warnings=store.warnings)
    store.remove()
    return report


def checkpoint_policy(mm, every: int = 1, folder: Path | None = None, resume: bool = True) -> CheckpointPolicy:
    """The policy for jobs rendered by ``mm`` (a loaded ``MimicMotion``): its weights fingerprinted."""
    return CheckpointPolicy(every=every, folder=folder, resume=resume, weights_key=weights_fingerprint(mm.layout, mm.components.facts))
