"""The checks of a job that need no model and no decoding: every input exists (and is a file where a
file is needed), every output can be written and writing it cannot destroy an input of this or another
job. Torch-free, so ``mimic run`` answers a missing file or an output clash at once; opening the
inputs (decoding the reference, probing the video) is admission's work (``runtime/admission.py``)."""
from __future__ import annotations

from pathlib import Path

from mimic.errors import InputError
from mimic.media.images import IMAGE_SUFFIXES
from mimic.media.video_writer import check_writable, foreign_files
from mimic.runtime.jobs import FLAG_OF, Job, RefusedJob


def check_job_paths(job: Job, others: tuple[Job, ...] | list[Job] = (), audio: bool = False) -> None:
    """InputError (one line naming the flag) for the first path of ``job`` that cannot work."""
    for name, path in job.input_paths().items():
        flag = FLAG_OF[name]
        if not path.exists():
            raise InputError(f"{flag} {path} does not exist")
        if path.is_dir() and name != "pose_frames":
            raise InputError(f"{flag} {path} is a folder, not {'an image file' if name == 'reference' else 'a file'}")
    if job.driving is not None and job.driving.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"--driving {job.driving} is an image, not a video: give a video (or --pose-frames for drawn pose images)")
    check_output(job, others)
    if audio and job.writes_png_sequence:
        raise InputError(f"--audio needs a video output, but --out {job.out} is a folder of PNG frames")


def check_output(job: Job, others: tuple[Job, ...] | list[Job] = ()) -> None:
    """The output can be written, and writing it cannot destroy an input of this or another job."""
    out = Path(job.out)
    target = _canonical(out)
    for other in (job, *others):
        for name, path in other.input_paths().items():
            source = _canonical(path)
            whose = "the job's" if other is job else f"another job's ({other.out})"
            if source == target:
                raise InputError(f"--out {out} is {whose} {FLAG_OF[name]} input: choose another output")
            if job.writes_png_sequence and target in source.parents:
                raise InputError(f"--out {out} holds {whose} {FLAG_OF[name]} input {path}: the folder is replaced when the frames are written")
    if job.writes_png_sequence:
        check_writable(out / "frame_000001.png", create=False, what="--out")
        check_writable(out, create=False, what="--out")  # the folder is swapped in whole
        foreign = foreign_files(out)
        if foreign:
            raise InputError(f"--out {out} holds other files ({', '.join(foreign[:3])}): PNG frames go to a new or frames-only folder")
    else:
        if out.suffix.lower() not in (".mp4", ".mov", ".mkv"):
            raise InputError(f"--out {out}: use an .mp4/.mov/.mkv file or a folder (numbered PNGs)")
        check_writable(out, create=False, what="--out")
    check_writable(job.output_paths()["report"], create=False, what="--out")  # its run report (a longer name) is written too


def screen_jobs(entries: list, base, audio: bool = False) -> tuple[list[tuple[int, Job]], list[RefusedJob]]:
    """Every check of a batch that needs no model, per job: (runnable (1-based index, job) pairs,
    refused jobs). A job is refused alone for a bad jobs-file entry, a setting that does not fit the
    others (``job.config(base)``), a path that cannot work, or an output another job writes too."""
    jobs = [e for e in entries if isinstance(e, Job)]
    outs = [_canonical(j.out) for j in jobs]
    runnable, refused = [], []
    for index, entry in enumerate(entries, 1):
        if isinstance(entry, RefusedJob):
            refused.append(entry)
            continue
        try:
            if outs.count(_canonical(entry.out)) > 1:
                raise InputError(f"--out {entry.out}: another job writes the same output")
            entry.config(base)  # the job's settings are valid together with the run's
            check_job_paths(entry, [j for j in jobs if j is not entry], audio)
        except InputError as err:
            refused.append(RefusedJob(index, str(err), entry.out))
            continue
        runnable.append((index, entry))
    return runnable, refused


def _canonical(path: Path) -> Path:
    return Path(path).expanduser().resolve()
