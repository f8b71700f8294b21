"""Jobs: one reference + one driving source + one output, from the CLI, a jobs file (YAML/JSON list,
for render farms), upstream's ``configs/test.yaml`` or the Python API.

A jobs file speaks the command line's words: each entry's keys are ``mimic run``'s long flags without
the dashes (``ref``, ``driving``, ``pose``, ``pose_frames``, ``ref_pose``, ``out``, ``fps``, ``steps``,
``resolution``, ...; ``mimic.model.config`` declares the settings), and the earlier names still work
(``reference``, ``poses``, ``output_fps``, upstream's ``num_inference_steps``...). Relative paths are
relative to the jobs file. An entry that cannot run (an unknown key, a bad value) becomes a
:class:`RefusedJob` with its index and one-line reason: it fails alone, the others run.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mimic.errors import InputError
from mimic.model.config import SETTING_KEYS, GenerationConfig, did_you_mean, settings_from_mapping

INPUT_FIELDS = ("reference", "driving", "poses", "pose_frames", "ref_pose")  # the one list of a job's inputs
_PATH_FIELDS = (*INPUT_FIELDS, "out")
# jobs-file key -> Job field: the CLI's flag names first, then the earlier names
PATH_KEYS = {"ref": "reference", "driving": "driving", "pose": "poses", "pose_frames": "pose_frames", "ref_pose": "ref_pose", "out": "out",
             "reference": "reference", "poses": "poses"}
FLAG_OF = {"reference": "--ref", "driving": "--driving", "poses": "--pose", "pose_frames": "--pose-frames", "ref_pose": "--ref-pose", "out": "--out"}
REPORT_NAME, CHECKPOINT_SUFFIX = ".report.json", ".checkpoint"
JOBS_FORMAT_HELP = "README, \"Jobs files\""


@dataclass(frozen=True)
class Job:
    """One render. Paths may be ``str`` or any ``os.PathLike``; they are stored as ``Path``.
    ``overrides``: settings by field name or jobs-file key (``fps`` or ``output_fps``), checked and
    normalised here (a ``resolution`` of 720 becomes 768, the warning kept in ``warnings`` and in the
    job's report), so every entry point treats them alike."""

    reference: Path
    out: Path
    driving: Path | None = None  # a driving video (DWPose runs on it)
    poses: Path | None = None  # a pose file from `mimic pose`
    pose_frames: Path | None = None  # already-drawn pose images (video or folder)
    ref_pose: Path | None = None  # the reference's drawn pose (else DWPose on the reference)
    overrides: dict = field(default_factory=dict)  # GenerationConfig fields
    warnings: tuple[str, ...] = field(default=(), compare=False)  # from normalising the overrides (kept by dataclasses.replace)

    def __post_init__(self) -> None:
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if value is None:
                if name in ("reference", "out"):
                    raise InputError(f"a job needs {FLAG_OF[name]} (got None)")
                continue
            if not isinstance(value, (str, os.PathLike)):
                raise InputError(f"job {name} must be a path (str or os.PathLike), got {type(value).__name__}")
            object.__setattr__(self, name, Path(os.fspath(value)))
        if str(self.out) == "-":
            raise InputError("--out -: writing to standard output is not supported; give an .mp4/.mov/.mkv file or a folder for PNG frames")
        if self.out.is_symlink():  # the render goes where the link points (replacing the link would leave the target stale)
            object.__setattr__(self, "out", self.out.resolve())
        if not isinstance(self.overrides, dict):
            raise InputError(f"job overrides must be a mapping of settings, got {type(self.overrides).__name__}")
        sources = [s for s in (self.driving, self.poses, self.pose_frames) if s is not None]
        if len(sources) != 1:
            raise InputError(f"job for {self.reference}: give exactly one of driving video, pose file or pose frames (got {len(sources)})")
        overrides, warnings = settings_from_mapping(self.overrides, f"job for {self.reference}: ")
        object.__setattr__(self, "overrides", overrides)
        object.__setattr__(self, "warnings", tuple(dict.fromkeys((*self.warnings, *warnings))))

    def input_paths(self) -> dict[str, Path]:
        """The job's input paths by field name (the fields not given are left out)."""
        return {name: getattr(self, name) for name in INPUT_FIELDS if getattr(self, name) is not None}

    def output_paths(self, checkpoint_root: Path | None = None) -> dict[str, Path]:
        """Everything the job writes: ``out`` (a video, or a folder of numbered PNGs), its ``report``
        and its ``checkpoint`` folder (``OUT.checkpoint/`` beside the output; under
        ``checkpoint_root`` a folder named after the output plus a hash of its absolute path, so
        two outputs named alike in different folders do not collide)."""
        out = self.out
        report = out / "report.json" if self.writes_png_sequence else out.with_name(out.name + REPORT_NAME)
        if checkpoint_root is None:
            checkpoint = out.with_name(out.name + CHECKPOINT_SUFFIX)
        else:
            import hashlib

            tag = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
            checkpoint = Path(checkpoint_root) / f"{out.name}.{tag}{CHECKPOINT_SUFFIX}"
        return {"out": out, "report": report, "checkpoint": checkpoint}

    def config(self, base: GenerationConfig) -> GenerationConfig:
        return base.with_overrides(**self.overrides)

    @property
    def writes_png_sequence(self) -> bool:
        """An output without a file suffix (or an existing folder) receives numbered PNGs."""
        return self.out.suffix == "" or self.out.is_dir()


@dataclass(frozen=True)
class RefusedJob:
    """A jobs-file entry that cannot run: its 1-based index, its output (when it names one) and why."""

    index: int
    error: str
    out: Path | None = None
    source: Path | None = None  # the jobs file it came from

    def message(self) -> str:
        """The error as one line that says where: ``jobs.yaml: job 2: ...``."""
        return f"{self.source}: job {self.index}: {self.error}" if self.source else self.error


def _path(value, base: Path) -> Path | None:
    if value is None:
        return None
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else base / p


def _load_structured(path: Path):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"jobs file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as err:  # json/yaml parse errors
        raise InputError(f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {str(err).splitlines()[0]}") from None


def job_from_entry(item, base: Path, where: str = "") -> Job:
    """One jobs-file entry (a mapping in the CLI's words) -> a Job; InputError naming the key."""
    if not isinstance(item, dict):
        raise InputError(f"{where}expected a mapping of keys (ref, driving, out, ...), got {type(item).__name__}")
    paths, settings = {}, {}
    for key, value in item.items():
        if key in PATH_KEYS:
            if PATH_KEYS[key] in paths:
                raise InputError(f"{where}{key!r} and another key both give {FLAG_OF[PATH_KEYS[key]]}")
            paths[PATH_KEYS[key]] = _path(value, base)
        elif key in SETTING_KEYS:
            settings[key] = value
        else:
            raise InputError(f"{where}unknown key {key!r}{did_you_mean(key, [*PATH_KEYS, *SETTING_KEYS])}")
    missing = [k for k, f in (("ref", "reference"), ("out", "out")) if f not in paths]
    if missing:
        raise InputError(f"{where}needs {' and '.join(repr(m) for m in missing)} (the reference image and the output)")
    try:
        return Job(overrides=settings, **paths)
    except InputError as err:
        prefix = f"job for {paths['reference']}: "
        raise InputError(f"{where}{str(err).removeprefix(prefix)}") from None


def load_jobs_file(path: Path) -> list[Job | RefusedJob]:
    """The entries of a jobs file, in order: a :class:`Job` per good entry, a :class:`RefusedJob` per
    bad one (the file itself unreadable, empty or not a list: InputError). Upstream's test.yaml (with
    ``test_case``) is accepted as well."""
    data = _load_structured(path)
    base = Path(path).parent
    if isinstance(data, dict) and "test_case" in data:
        return upstream_jobs(data, base)
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: expected a non-empty list of jobs (see {JOBS_FORMAT_HELP})")
    entries: list[Job | RefusedJob] = []
    for n, item in enumerate(data, 1):
        try:
            entries.append(job_from_entry(item, base))
        except InputError as err:
            out = item.get("out") if isinstance(item, dict) else None
            entries.append(RefusedJob(n, str(err), _path(out, base) if isinstance(out, (str, os.PathLike)) else None, Path(path)))
    return entries


def upstream_jobs(data: dict, base: Path, out_dir: Path | None = None) -> list[Job]:
    """Upstream's configs/test.yaml: one job per test_case, output named like upstream's."""
    jobs = []
    for n, case in enumerate(data.get("test_case") or [], 1):
        try:
            video, image = case["ref_video_path"], case["ref_image_path"]
        except (KeyError, TypeError):
            raise InputError(f"test_case {n} needs ref_video_path and ref_image_path") from None
        overrides = {k: v for k, v in case.items() if k in SETTING_KEYS}
        stem = Path(str(video)).name.split(".")[0]
        out = (out_dir or base / "outputs") / f"{stem}.mp4"
        jobs.append(Job(reference=_path(image, base), driving=_path(video, base), out=out, overrides=overrides))
    if not jobs:
        raise InputError("the config has no test_case entries")
    return jobs


def settings_from_file(path: Path) -> tuple[dict, list[Job], list[str]]:
    """A mapping of run settings (``--config``): the CLI's words, field names or upstream's test.yaml
    names (``num_inference_steps``, ``guidance_scale``...); a ``test_case`` list becomes jobs.
    -> (normalised field overrides, jobs, warnings)."""
    data = _load_structured(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings")
    jobs = upstream_jobs(data, Path(path).parent) if "test_case" in data else []
    settings = {k: v for k, v in data.items() if k not in ("test_case", "base_model_path", "ckpt_path")}
    overrides, warnings = settings_from_mapping(settings, f"{path}: ", name_key=True)
    return overrides, jobs, warnings


def build_jobs(ref, driving, pose, pose_frames, ref_pose, out, jobs_file, config_jobs) -> list[Job | RefusedJob]:
    if jobs_file is not None:
        if any(v is not None for v in (ref, driving, pose, pose_frames, out)):
            raise InputError("give either --jobs or --ref/--driving/--out, not both")
        return load_jobs_file(jobs_file)
    if ref is None and config_jobs:
        return config_jobs
    if ref is None or out is None:
        raise InputError("need --ref IMAGE and --out OUT (or --jobs FILE)")
    return [Job(reference=ref, driving=driving, poses=pose, pose_frames=pose_frames, ref_pose=ref_pose, out=out)]
