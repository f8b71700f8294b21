"""Locating and strictly loading real MimicMotion weights (spec 1.1, 2.1-2.5).

``--weights DIR`` takes upstream's layout as it is::

    DIR/DWPose/yolox_l.onnx
    DIR/DWPose/dw-ll_ucoco_384.onnx
    DIR/SVD/stable-video-diffusion-img2vid-xt-1-1/   (diffusers folder; or a hub id via --svd)
    DIR/MimicMotion_1-1.pth                          (or DIR/MimicMotion.pth for 1.0)

Model sizes always come from the config files found there. Every state dict is loaded strictly:
a missing, unexpected or mis-shaped key is a :class:`WeightsError` naming examples.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mimic.errors import WeightsError

SVD_HUB_ID = "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
SVD_SUBDIR = Path("SVD") / "stable-video-diffusion-img2vid-xt-1-1"
CHECKPOINT_NAMES = ("MimicMotion_1-1.pth", "MimicMotion_1.pth", "MimicMotion.pth")
DET_MODEL = Path("DWPose") / "yolox_l.onnx"
POSE_MODEL = Path("DWPose") / "dw-ll_ucoco_384.onnx"
# The only files of the (gated, ~10 GB) SVD repo that MimicMotion needs: the SVD UNet weights are not.
SVD_FILES = (
    "model_index.json",
    "feature_extractor/preprocessor_config.json",
    "image_encoder/config.json",
    "image_encoder/model.fp16.safetensors",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
)


# Where each part comes from (the upstream README's sources), for the missing-weights message.
CHECKPOINT_REPO = "tencent/MimicMotion"
DWPOSE_REPO = "yzd-v/DWPose"
SVD_SOURCE = f"gated hub repo {SVD_HUB_ID}: accept its licence, then `hf auth login`"
ALL_PARTS = ("svd", "checkpoint", "det_model", "pose_model")


@dataclass(frozen=True)
class WeightsLayout:
    svd: str  # local diffusers folder or hub id
    checkpoint: Path
    det_model: Path
    pose_model: Path


def resolve_weights(
    weights_dir: Path | None = None,
    svd: str | None = None,
    checkpoint: Path | None = None,
    det_model: Path | None = None,
    pose_model: Path | None = None,
) -> WeightsLayout:
    """Fill each component from the per-component option, else from ``weights_dir``'s upstream layout."""
    root = Path(weights_dir) if weights_dir is not None else None
    if root is not None and not root.is_dir():
        raise WeightsError(f"weights directory {root} does not exist")

    def need(what: str, given, default: Path | None) -> Path:
        if given is not None:
            return Path(given)
        if default is None:
            raise WeightsError(f"no {what}: pass --weights DIR (upstream layout) or the per-component option")
        return default

    if svd is None and root is not None:
        svd = str(root / SVD_SUBDIR) if (root / SVD_SUBDIR).is_dir() else SVD_HUB_ID
    ckpt_default = next((root / n for n in CHECKPOINT_NAMES if (root / n).is_file()), root / CHECKPOINT_NAMES[0]) if root else None
    return WeightsLayout(
        svd=svd or SVD_HUB_ID,
        checkpoint=need("MimicMotion checkpoint", checkpoint, ckpt_default),
        det_model=need("DWPose detector", det_model, root / DET_MODEL if root else None),
        pose_model=need("DWPose pose model", pose_model, root / POSE_MODEL if root else None),
    )


def check_layout(layout: WeightsLayout, root: Path | None = None, parts: tuple[str, ...] = ALL_PARTS) -> None:
    """Every missing part of ``layout`` in one ``WeightsError`` line, each with where it comes from and
    where it goes, before anything is loaded (a user with an empty ``--weights`` folder learns
    everything at once, not one part per attempt). ``root``: the ``--weights`` folder, if any.
    A hub id for SVD that is not in the local hub cache is named too when something else is
    missing; alone it is no error (it is downloaded on first use, with its own message if that fails)."""
    missing: list[str] = []
    if "checkpoint" in parts and not Path(layout.checkpoint).is_file():
        ckpt = Path(layout.checkpoint)
        missing.append(f"{_shown_path(ckpt, root)} (MimicMotion checkpoint: `hf download {CHECKPOINT_REPO} {CHECKPOINT_NAMES[0]} "
                       f"--local-dir {ckpt.parent}`)")
    dwpose = [Path(m) for name, m in (("det_model", layout.det_model), ("pose_model", layout.pose_model)) if name in parts and not Path(m).is_file()]
    if dwpose:
        folders = sorted({str(m.parent) for m in dwpose})
        get = f"`hf download {DWPOSE_REPO} {' '.join(m.name for m in dwpose)} --local-dir {folders[0]}`" if len(folders) == 1 else f"from the hub repo {DWPOSE_REPO}"
        missing.append(f"{' and '.join(_shown_path(m, root) for m in dwpose)} (DWPose ONNX: {get})")
    if "svd" in parts:
        local = Path(layout.svd)
        if local.is_absolute() or layout.svd.startswith(".") or layout.svd.count("/") != 1:
            if not local.is_dir():
                missing.append(f"{_shown_path(local, root)} (SVD img2vid-xt 1.1 diffusers folder, from the {SVD_SOURCE})")
        elif missing and not _hub_cached(layout.svd):
            missing.append(f"SVD img2vid-xt 1.1 (not in {root / SVD_SUBDIR if root else 'a local folder'}/ nor the hub cache: "
                           f"downloaded on first use from the {SVD_SOURCE})")
    if missing:
        raise WeightsError(f"missing weights ({len(missing)} part{'s' if len(missing) > 1 else ''}): {'; '.join(missing)} "
                           f"(README, \"Real weights\")")


def _shown_path(path, root: Path | None) -> str:
    path = Path(path)
    try:
        return str(path.relative_to(root)) if root is not None else str(path)
    except ValueError:
        return str(path)


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)
    except Exception:  # pragma: no cover - no hub library: nothing is cached
        return False


def fetch_svd(svd: str) -> Path:
    """A local folder as is; otherwise download only the files MimicMotion needs from the hub."""
    local = Path(svd)
    if local.is_dir():
        return local
    if local.is_absolute() or svd.startswith(".") or svd.count("/") != 1:
        raise WeightsError(f"SVD folder {svd} does not exist (and it is not a hub id like {SVD_HUB_ID})")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(svd, allow_patterns=list(SVD_FILES)))
    except GatedRepoError:
        raise WeightsError(f"{svd} is gated: accept its licence on the hub, then `hf auth login` (or set HF_TOKEN), or pass a local folder with --svd DIR") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"{svd} was not found on the hub (or needs a token): check the id, `hf auth login`, or pass a local folder with --svd DIR") from None
    except LocalEntryNotFoundError:
        raise WeightsError(f"cannot download {svd} (offline?) and it is not in the local hub cache: download it once or pass a local folder") from None
    except OSError as err:
        raise WeightsError(f"downloading {svd} failed ({err.__class__.__name__}: {err}); pass a local folder instead") from None


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(f"missing {path.parent.name}/{path.name} in {path.parent.parent}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{path} is not valid JSON: {err}") from None


def find_weights_file(folder: Path, stems: tuple[str, ...]) -> Path:
    """Prefer the fp16 variant (what SVD ships), then the plain safetensors file."""
    for stem in stems:
        for name in (f"{stem}.fp16.safetensors", f"{stem}.safetensors"):
            if (folder / name).is_file():
                return folder / name
    raise WeightsError(f"no weights in {folder} (looked for {', '.join(s + '[.fp16].safetensors' for s in stems)})")


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{path} is not a readable safetensors file: {err}") from None


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str, prefix: str = "", assign: bool = False) -> None:
    """load_state_dict(strict=True) with an error that names examples of what is wrong.
    ``assign=True`` replaces (meta) parameters by the given tensors instead of copying into them."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{prefix}{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(prefix + k for k in missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(prefix + k for k in unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])}; checkpoint vs config)")
    if problems:
        raise WeightsError(f"{what} does not match its config: " + "; ".join(problems))
    module.load_state_dict(state, strict=True, assign=assign)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """MimicMotion .pth: a flat state dict with ``unet.`` and ``pose_net.`` prefixes -> (unet, pose_net)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"MimicMotion checkpoint {path} does not exist (expected MimicMotion_1-1.pth)")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt/foreign pickles
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({err.__class__.__name__}: {str(err).splitlines()[0][:160]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a flat state dict of tensors (as MimicMotion_1-1.pth is)")
    unet = {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")}
    pose = {k[len("pose_net."):]: v for k, v in state.items() if k.startswith("pose_net.")}
    other = [k for k in state if not k.startswith(("unet.", "pose_net."))]
    if other:
        raise WeightsError(f"{path} has {len(other)} keys outside unet./pose_net. (e.g. {', '.join(other[:3])}): not a MimicMotion checkpoint")
    if not unet or not pose:
        raise WeightsError(f"{path} lacks {'unet.' if not unet else 'pose_net.'} weights: not a MimicMotion checkpoint")
    return unet, pose
