"""Jobs: one reference + one driving source + one output, from the CLI, a jobs file (YAML/JSON list,
for render farms) or upstream's ``configs/test.yaml``."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from mimic.errors import InputError
from mimic.model.config import GenerationConfig, check_setting

# upstream test.yaml key -> GenerationConfig field
UPSTREAM_KEYS = {
    "num_frames": "window",
    "frames_overlap": "overlap",
    "num_inference_steps": "steps",
    "noise_aug_strength": "noise_aug_strength",
    "resolution": "resolution",
    "sample_stride": "sample_stride",
    "fps": "output_fps",
    "seed": "seed",
}


INPUT_FIELDS = ("reference", "driving", "poses", "pose_frames", "ref_pose")  # the one list of a job's inputs
_PATH_FIELDS = (*INPUT_FIELDS, "out")
REPORT_NAME, CHECKPOINT_SUFFIX = ".report.json", ".checkpoint"


@dataclass(frozen=True)
class Job:
    """One render. Paths may be ``str`` or any ``os.PathLike``; they are stored as ``Path``."""

    reference: Path
    out: Path
    driving: Path | None = None  # a driving video (DWPose runs on it)
    poses: Path | None = None  # a pose file from `mimic pose`
    pose_frames: Path | None = None  # already-drawn pose images (video or folder)
    ref_pose: Path | None = None  # the reference's drawn pose (else DWPose on the reference)
    overrides: dict = field(default_factory=dict)  # GenerationConfig fields

    def __post_init__(self) -> None:
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (str, os.PathLike)):
                raise InputError(f"job {name} must be a path (str or os.PathLike), got {type(value).__name__}")
            object.__setattr__(self, name, Path(os.fspath(value)))
        if not isinstance(self.overrides, dict):
            raise InputError(f"job overrides must be a mapping of settings, got {type(self.overrides).__name__}")
        sources = [s for s in (self.driving, self.poses, self.pose_frames) if s is not None]
        if len(sources) != 1:
            raise InputError(f"job for {self.reference}: give exactly one of driving video, pose file or pose frames (got {len(sources)})")
        known = {f.name for f in fields(GenerationConfig)}
        unknown = sorted(set(self.overrides) - known)
        if unknown:
            raise InputError(f"job for {self.reference}: unknown settings {unknown}; known: {sorted(known)}")
        for name, value in self.overrides.items():
            try:
                check_setting(name, value)
            except InputError as err:
                raise InputError(f"job for {self.reference}: {name}: {err}") from None

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


def load_jobs_file(path: Path) -> list[Job]:
    """A list of mappings with keys reference, out, and one of driving / poses / pose_frames,
    optional ref_pose and any GenerationConfig field as an override. Relative paths are relative
    to the jobs file. Upstream's test.yaml (with ``test_case``) is accepted as well."""
    data = _load_structured(path)
    base = Path(path).parent
    if isinstance(data, dict) and "test_case" in data:
        return upstream_jobs(data, base)
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: expected a non-empty list of jobs")
    jobs = []
    for n, item in enumerate(data, 1):
        if not isinstance(item, dict) or "reference" not in item or "out" not in item:
            raise InputError(f"{path}: job {n} needs at least 'reference' and 'out'")
        item = dict(item)
        try:
            paths = {k: _path(item.pop(k, None), base) for k in _PATH_FIELDS}
            for key, value in item.items():
                check_setting(key, value)
            jobs.append(Job(overrides=item, **paths))
        except InputError as err:
            raise InputError(f"{path}: job {n}: {err}") from None
    return jobs


def upstream_jobs(data: dict, base: Path, out_dir: Path | None = None) -> list[Job]:
    """Upstream's configs/test.yaml: one job per test_case, output named like upstream's."""
    jobs = []
    for n, case in enumerate(data.get("test_case") or [], 1):
        try:
            video, image = case["ref_video_path"], case["ref_image_path"]
        except (KeyError, TypeError):
            raise InputError(f"test_case {n} needs ref_video_path and ref_image_path") from None
        overrides = {UPSTREAM_KEYS[k]: v for k, v in case.items() if k in UPSTREAM_KEYS}
        if "guidance_scale" in case:
            overrides["guidance_min"] = overrides["guidance_max"] = case["guidance_scale"]
        stem = Path(str(video)).name.split(".")[0]
        out = (out_dir or base / "outputs") / f"{stem}.mp4"
        jobs.append(Job(reference=_path(image, base), driving=_path(video, base), out=out, overrides=overrides))
    if not jobs:
        raise InputError("the config has no test_case entries")
    return jobs


def settings_from_file(path: Path) -> tuple[dict, list[Job]]:
    """A mapping of run settings: our names (``steps``...) or upstream's test.yaml names
    (``num_inference_steps``, ``guidance_scale``...); a ``test_case`` list becomes jobs."""
    data = _load_structured(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings")
    jobs = upstream_jobs(data, Path(path).parent) if "test_case" in data else []
    known = set(GenerationConfig.__dataclass_fields__)
    overrides = {}
    for key, value in data.items():
        if key in ("test_case", "base_model_path", "ckpt_path"):
            continue
        if key == "guidance_scale":
            names = ("guidance_min", "guidance_max")
        elif key in UPSTREAM_KEYS:
            names = (UPSTREAM_KEYS[key],)
        elif key in known:
            names = (key,)
        else:
            raise InputError(f"{path}: unknown setting {key!r}")
        for name in names:
            try:
                check_setting(name, value)
            except InputError as err:
                text = str(err).replace("--guidance-min", "--guidance") if key == "guidance_scale" else str(err)
                raise InputError(f"{path}: {key}: {text}") from None
            overrides[name] = value
    return overrides, jobs


def build_jobs(ref, driving, pose, pose_frames, ref_pose, out, jobs_file, config_jobs) -> list[Job]:
    if jobs_file is not None:
        if any(v is not None for v in (ref, driving, pose, pose_frames, out)):
            raise InputError("give either --jobs or --ref/--driving/--out, not both")
        return load_jobs_file(jobs_file)
    if ref is None and config_jobs:
        return config_jobs
    if ref is None or out is None:
        raise InputError("need --ref IMAGE and --out OUT (or --jobs FILE)")
    return [Job(reference=ref, driving=driving, poses=pose, pose_frames=pose_frames, ref_pose=ref_pose, out=out)]
