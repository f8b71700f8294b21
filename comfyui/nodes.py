"""The node pack's nodes (ComfyUI V1 classes; ``v3.py`` derives the V3 schema from them), each a thin
layer over the engine's Python API and its one pipeline (``mimic.runtime.pipeline.generate``).

Types: ``MIMIC_MODEL`` (a loaded engine, :class:`MimicModel`); ComfyUI's ``IMAGE`` (float
``[B, H, W, 3]`` in 0..1), ``LATENT`` (``{"samples": [F, 4, h, w]}``), ``FLOAT``, ``STRING``.
Pose images are drawn poses as the wrapper passes them: frame 0 the reference's pose, then one per
driving frame (``mimic run --ref-pose`` + ``--pose-frames``).

The sampler renders: one ``generate()`` call denoises and decodes, the temporal decoder's chunks
streamed into the IMAGE as they come (the device holds one chunk of decoded frames at a time, the
reference slot and the padding are dropped by the pipeline, as for ``mimic run``), returning the
frames, the final latents and the output frame rate. The decode node re-decodes a ``LATENT``
(another chunk size, or latents from elsewhere) and, handed the sampler's own latents at the chunk
size they were decoded with, returns the sampler's frames without decoding again.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from .host import ComfyProgress, check_interrupted, interrupt_control, node_errors, resolve_path, weights_folders
from .settings import flag_names, pose_fields, sampler_fields, widget
from .settings import overrides as setting_overrides
from .settings import widgets as setting_widgets

log = logging.getLogger("mimic.comfyui")

CATEGORY = "MimicMotion (mimic)"
MODEL_TYPE = "MIMIC_MODEL"
PRESET_PREFIX = "preset:"
PRECISIONS = ("auto", "fp16", "fp32")
IN_MEMORY = Path("<comfyui>")


class MimicModel:
    """A loaded engine (``mimic.runtime.MimicMotion``) as it travels between nodes."""

    def __init__(self, mm, name: str):
        self.mm, self.name = mm, name

    def config(self, overrides: dict):
        """The job's settings: the model's defaults (its preset's) with ``overrides`` (field names)
        checked and normalised as every entry point does. -> (GenerationConfig, warnings)."""
        from mimic.model.config import settings_from_mapping

        unset = {k: v for k, v in overrides.items() if v is None}
        given, warnings = settings_from_mapping({k: v for k, v in overrides.items() if v is not None})
        config = self.mm.base_config.with_overrides(**given)
        return (dataclasses.replace(config, **unset) if unset else config), warnings

    def __repr__(self) -> str:
        return f"MimicModel({self.name}, {self.mm.options.backend} on {self.mm.options.device})"


# One engine stays loaded between prompts (ComfyUI re-runs the loader only when its inputs change;
# this keeps the engine even when ComfyUI's output cache drops it). Loading other weights or options
# replaces it; the replaced one is freed once no node output holds it.
_LOADED: dict[tuple, MimicModel] = {}


def _weights_choices() -> list[str]:
    from mimic.model.presets import PRESET_NAMES

    return [*weights_folders(), *(PRESET_PREFIX + p for p in PRESET_NAMES)]


def _device_choices() -> list[str]:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu", *(f"cuda:{i}" for i in range(count))]


class MimicLoadModel:
    DESCRIPTION = ("Loads MimicMotion once (SVD image encoder + VAE, the MimicMotion UNet + PoseNet, DWPose) on a backend: "
                   "torch, onnxruntime (graphs exported on first use) or tensorrt (engines from `mimic build-engines`).")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)

    @classmethod
    def INPUT_TYPES(cls):
        from mimic.runtime.backend_api import BACKENDS

        choices = _weights_choices()
        return {
            "required": {
                "weights": (choices, {"default": choices[0], "tooltip": "A folder in models/mimicmotion in upstream's layout "
                                      "(DWPose/, SVD/, MimicMotion_1-1.pth), or a built-in preset (toy: the committed toy model)."}),
                "backend": (list(BACKENDS), {"default": "torch", "tooltip": "torch, onnxruntime or tensorrt (--backend)."}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": "auto: fp16 on CUDA, fp32 on the CPU."}),
                "device": (_device_choices(), {"default": "cpu", "tooltip": "cpu or cuda:N (--device)."}),
            },
            "optional": {
                "weights_path": ("STRING", {"default": "", "tooltip": "A weights folder anywhere (upstream's layout); overrides weights."}),
                "engines": ("STRING", {"default": "", "tooltip": "The engine store of `mimic build-engines` (backend tensorrt)."}),
            },
        }

    def load(self, weights, backend, precision, device, weights_path="", engines=""):
        with node_errors():
            from mimic.errors import InputError
            from mimic.runtime.api import MimicMotion, RuntimeOptions

            options = RuntimeOptions(backend=backend, device=device, precision=None if precision == "auto" else precision,
                                     engines=resolve_path(engines, "input") if engines.strip() else None)
            source = weights_path.strip() or weights
            key = (source, options)
            if key in _LOADED:
                return (_LOADED[key],)
            _LOADED.clear()  # drop the engine loaded before (freed once nothing holds it)
            if source.startswith(PRESET_PREFIX):
                mm = MimicMotion.from_preset(source.removeprefix(PRESET_PREFIX), options)
            else:
                folder = weights_folders().get(source) or resolve_path(source, "input")
                if not folder.is_dir():
                    raise InputError(f"weights folder {folder} does not exist")
                mm = MimicMotion.from_weights(folder, options)
            _LOADED[key] = MimicModel(mm, source)
            log.info(f"mimic: loaded {source} ({backend} on {device}) in {mm.load_seconds:.1f} s")
            return (_LOADED[key],)


def images_to_uint8(images, what: str):
    """ComfyUI IMAGE (float [B, H, W, 3] in 0..1) -> uint8 numpy [B, H, W, 3] (exact for images
    that came from 8-bit files: LoadImage divides by 255)."""
    import torch

    from mimic.errors import InputError

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] != 3:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"{what} must be an IMAGE batch [B, H, W, 3], got {shape}")
    if images.shape[0] == 0:
        raise InputError(f"{what} holds no images")
    return (images.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def uint8_to_images(frames_chw):
    """uint8 (n, 3, H, W) frames -> ComfyUI IMAGE (float32 [n, H, W, 3] in 0..1)."""
    import torch

    return torch.from_numpy(frames_chw).permute(0, 2, 3, 1).contiguous().float() / 255.0


def _pose_array(frames_hwc, hw):
    """uint8 [n, h, w, 3] drawn poses -> [n, 3, H, W] at the output size, as `mimic run --ref-pose
    --pose-frames` reads them (the same resize), frame 0 joined to the rest as there."""
    import numpy as np

    from mimic.runtime.inputs import resize_pose_image  # the pipeline's own reader of drawn pose images

    first, rest = resize_pose_image(frames_hwc[0], hw), np.stack([resize_pose_image(rgb, hw) for rgb in frames_hwc[1:]])
    return np.concatenate([first[None], rest])


class _ImageSink:
    """The pipeline's frame sink writing straight into a ComfyUI IMAGE (float32 [n, H, W, 3])."""

    def __init__(self, frames: int, hw):
        import torch

        self.images = torch.empty((frames, *hw, 3), dtype=torch.float32)
        self.frames_written = 0

    def write(self, frames) -> None:
        done = self.frames_written
        self.images[done:done + len(frames)] = uint8_to_images(frames)
        self.frames_written += len(frames)


class _FinalLatents:
    """An observer keeping a copy of the latents after the last denoising step."""

    latents = None

    def on_step_end(self, step: int, num_steps: int, latents) -> None:
        if step == num_steps:
            self.latents = latents.detach().float().cpu().clone()


class MimicSampler:
    DESCRIPTION = ("Renders the reference image performing the poses: denoising (windowed, batched CFG) and decoding in one "
                   "pass through the engine's pipeline. pose_images: frame 0 the reference's pose, then the driving poses "
                   "(the pose node's poses_with_ref). Returns the frames (reference frame dropped), the final latents and "
                   "the output frame rate.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE", "LATENT", "FLOAT")
    RETURN_NAMES = ("images", "latent", "fps")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE,),
                "ref_image": ("IMAGE", {"tooltip": "The reference image (the first of a batch), cropped to the output size as --ref is."}),
                "pose_images": ("IMAGE", {"tooltip": "Drawn poses: the reference's pose, then one per driving frame."}),
            },
            "optional": setting_widgets(sampler_fields()),
        }

    def sample(self, model: MimicModel, ref_image, pose_images, **values):
        with node_errors(flag_names()):
            from mimic.errors import InputError
            from mimic.model.preprocess import prepare_reference
            from mimic.pose.images import ArrayPoses
            from mimic.runtime.inputs import JobInputs, pad_to_window
            from mimic.runtime.pipeline import generate, in_memory_job

            config, warnings = model.config(setting_overrides(sampler_fields(), values))
            check_interrupted()
            reference = prepare_reference(images_to_uint8(ref_image, "ref_image")[0], config.resolution)
            hw = reference.shape[:2]
            frames = images_to_uint8(pose_images, "pose_images")
            if len(frames) < 2:
                raise InputError(f"pose_images needs the reference's pose and at least one driving pose, got {len(frames)} image(s)")
            drawn = _pose_array(frames, hw)
            model.mm.check_settings(config)  # deep-feature caching the backend can run, the memory preflight: before any work
            poses, pad_warnings = pad_to_window(ArrayPoses(drawn), config.window, model.mm.options.pad_short)
            inputs = JobInputs(reference, poses, len(drawn) - 1, config.fps_for(None), warnings=[*warnings, *pad_warnings])
            sink, final = _ImageSink(inputs.num_output, hw), _FinalLatents()
            report = generate(model.mm.components, in_memory_job(config), inputs=inputs, sink=sink,
                              hooks=[final, ComfyProgress()], control=interrupt_control())
            for warning in report.warnings:
                log.warning(f"mimic: {warning}")
            images, samples = sink.images, final.latents[0]
            latent = {"samples": samples, "mimic": {"samples": samples, "decode_chunk": config.decode_chunk,
                                                    "num_output": int(images.shape[0]), "images": images}}
            return (images, latent, float(inputs.output_fps))


class MimicDecode:
    DESCRIPTION = ("Decodes MimicMotion latents with the temporal VAE decoder, decode_chunk_size frames at a time; the "
                   "reference frame (latent 0) is dropped. Given the sampler's latents at the chunk size it decoded with, "
                   "returns the sampler's frames without decoding again.")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": (MODEL_TYPE,), "latent": ("LATENT",), "decode_chunk_size": widget("decode_chunk")}}

    def decode(self, model: MimicModel, latent, decode_chunk_size):
        with node_errors(flag_names()):
            import numpy as np
            import torch

            from mimic.errors import InputError
            from mimic.runtime.decode import decode_frames

            samples = latent.get("samples") if isinstance(latent, dict) else None
            if not isinstance(samples, torch.Tensor) or samples.dim() not in (4, 5) or samples.shape[-3] != model.mm.info.latent_channels:
                raise InputError(f"latent must hold MimicMotion latents [frames, {model.mm.info.latent_channels}, h, w]")
            meta = latent.get("mimic") or {}
            if meta.get("samples") is samples and meta.get("decode_chunk") == decode_chunk_size:
                return (meta["images"],)
            latents = samples if samples.dim() == 5 else samples.unsqueeze(0)
            num_output = int(meta.get("num_output", latents.shape[1] - 1))
            mm, control, progress = model.mm, interrupt_control(), ComfyProgress()
            kept = []
            with torch.inference_mode():
                latents = latents.to(mm.device, mm.options.dtype)
                total = latents.shape[1]
                for start, frames in decode_frames(mm.backend, latents, mm.info.scaling_factor, decode_chunk_size):
                    kept.append(frames[max(0, 1 - start): max(0, 1 + num_output - start)])  # frame 0: the reference slot
                    progress.on_progress(min(total, start + len(frames)), total)
                    control.poll()
            return (uint8_to_images(np.concatenate(kept)),)


class MimicGetPoses:
    DESCRIPTION = ("DWPose on the driving frames and the reference (the loaded model's DWPose), retargeted to the reference "
                   "and drawn at the output size, as `mimic run --driving` does. Returns poses_with_ref (the reference's "
                   "pose, then the driving poses: the sampler's pose_images) and the driving poses alone.")
    CATEGORY = CATEGORY
    FUNCTION = "poses"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("poses_with_ref", "pose_images")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE,),
                "ref_image": ("IMAGE", {"tooltip": "The reference image (the first of a batch)."}),
                "pose_images": ("IMAGE", {"tooltip": "The driving video's frames (every frame given is used)."}),
            },
            "optional": setting_widgets(pose_fields()),
        }

    def poses(self, model: MimicModel, ref_image, pose_images, **values):
        with node_errors(flag_names()):
            from mimic.model.preprocess import prepare_reference
            from mimic.pose.sequence import PoseSequence
            from mimic.runtime.inputs import RawInputs, prepare_poses
            from mimic.runtime.jobs import Job

            config, _ = model.config(setting_overrides(pose_fields(), values))
            reference = prepare_reference(images_to_uint8(ref_image, "ref_image")[0], config.resolution)
            frames = images_to_uint8(pose_images, "pose_images")
            detector, detected = model.mm.detector(), []
            progress = ComfyProgress()
            for start in range(0, len(frames), 8):
                check_interrupted()
                detected += detector.detect_frames(list(frames[start:start + 8]), 8)
                progress.on_progress(len(detected), len(frames))
            # IMAGE frames carry no time: numbered as frames (fps 0: the output rate is the sampler's fps)
            seq = PoseSequence(frames=tuple(detected), frame_times_s=tuple(float(i) for i in range(len(detected))),
                               video_hw=tuple(frames.shape[1:3]), fps=0.0, sample_stride=1, frame_stride=1)
            job = Job(reference=IN_MEMORY, poses=IN_MEMORY, out=IN_MEMORY, overrides=config.to_dict())
            inputs = prepare_poses(RawInputs(job, reference, pose_file=seq), config, model.mm.detector)
            for warning in inputs.warnings:
                log.warning(f"mimic: {warning}")
            drawn = uint8_to_images(inputs.poses.get(list(range(1 + inputs.num_output))))
            return (drawn, drawn[1:])


class MimicToyPuppet:
    DESCRIPTION = ("The demo's inputs (`mimic demo`): a held-out puppet of the toy model in its rest pose and a dance, "
                   "drawn as poses, with the true frames. For trying the pack without files (toy preset).")
    CATEGORY = CATEGORY
    FUNCTION = "puppet"
    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE")
    RETURN_NAMES = ("ref_image", "pose_images", "ground_truth")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": ("INT", {"default": 8, "min": 1, "max": 1000, "tooltip": "Driving frames."}),
            "resolution": widget("resolution", 128),
        }}

    def puppet(self, frames, resolution):
        with node_errors(flag_names()):
            import torch

            from mimic.errors import InputError
            from mimic.model.preprocess import target_size
            from mimic.runtime.demo_assets import puppet_sample

            if resolution % 64:
                raise InputError(f"resolution must be a multiple of 64, got {resolution}")
            sample = puppet_sample(target_size(2, 1, resolution), frames)  # portrait, as `mimic demo`
            ref = torch.from_numpy(sample.reference)[None].float() / 255.0
            return (ref, uint8_to_images(sample.pose_images()), torch.from_numpy(sample.frames).float() / 255.0)


class MimicSaveVideo:
    DESCRIPTION = ("Writes frames as H.264 (out ending in .mp4/.mov/.mkv) or numbered PNGs (a folder), published whole "
                   "(as `mimic run --out`). A relative out is inside ComfyUI's output folder.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)

    @classmethod
    def INPUT_TYPES(cls):
        fps = widget("output_fps")[1]
        return {"required": {
            "images": ("IMAGE",),
            "out": ("STRING", {"default": "mimic/render.mp4", "tooltip": "OUT.mp4, or a folder for numbered PNGs."}),
            "fps": ("FLOAT", {"default": 15.0, "min": 1.0, "max": fps["max"], "step": 0.01, "tooltip": "Frame rate of the video."}),
        }}

    def save(self, images, out, fps):
        with node_errors({"--out": "out", "--fps": "fps"}):
            from mimic.media.video_writer import PngSequenceWriter, VideoWriter
            from mimic.runtime.pipeline import CONTAINERS

            frames = images_to_uint8(images, "images").transpose(0, 3, 1, 2)
            path = resolve_path(out, "output")
            png = path.suffix == "" or path.is_dir()  # as `mimic run --out`: a folder receives numbered PNGs
            writer = PngSequenceWriter(path) if png else VideoWriter(
                path, float(fps), frames.shape[2:], container_format=CONTAINERS.get(path.suffix.lower(), "mp4"))
            with writer:
                writer.write(frames)
            return {"ui": {"text": [str(path)]}, "result": (str(path),)}


class MimicRunJobs:
    DESCRIPTION = ("Renders jobs from file paths, as `mimic run` does (resumable, reports beside the outputs): one job "
                   "(ref + one of driving / pose / pose_frames, out) or a jobs file (README: Jobs files). settings: a YAML "
                   "mapping in the jobs file's words (steps: 25, seed: 7), under each job's own. Relative paths: ComfyUI's "
                   "input folder (inputs, jobs file) and output folder (out); a jobs file's own paths are relative to it.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("outputs", "report")

    @classmethod
    def IS_CHANGED(cls, **inputs):
        return float("nan")  # its inputs are files that may have changed: run on every prompt (NaN equals nothing)

    @classmethod
    def INPUT_TYPES(cls):
        def path(tip):
            return ("STRING", {"default": "", "tooltip": tip})

        return {
            "required": {"model": (MODEL_TYPE,)},
            "optional": {
                "jobs_file": path("A jobs file (YAML/JSON list; `mimic run --jobs`). Instead of the single job below."),
                "ref": path("Reference image (--ref)."),
                "driving": path("Driving video (--driving)."),
                "pose": path("Pose file from `mimic pose` (--pose)."),
                "pose_frames": path("Drawn pose images: a video or a folder (--pose-frames)."),
                "ref_pose": path("The reference's drawn pose image (--ref-pose)."),
                "out": path("OUT.mp4, or a folder for numbered PNGs (--out)."),
                "settings": ("STRING", {"default": "", "multiline": True, "tooltip": "Settings as in a jobs file: one `key: value` a line."}),
                "resume": ("BOOLEAN", {"default": True, "tooltip": "Continue an interrupted job from its checkpoint (else start over)."}),
            },
        }

    def run(self, model: MimicModel, jobs_file="", ref="", driving="", pose="", pose_frames="", ref_pose="", out="", settings="", resume=True):
        with node_errors(_job_words()):
            from mimic.errors import InputError, MimicError
            from mimic.runtime.checkpoint import checkpoint_policy
            from mimic.runtime.executor import JobExecutor
            from mimic.runtime.jobs import Job, RefusedJob, load_jobs_file

            overrides = _settings_text(settings)
            if jobs_file.strip():
                if any(v.strip() for v in (ref, driving, pose, pose_frames, ref_pose, out)):
                    raise InputError("give either jobs_file or ref/driving/pose/pose_frames/out, not both")
                entries = load_jobs_file(resolve_path(jobs_file, "input"))
            else:
                paths = {name: resolve_path(value, "input") for name, value in
                         (("reference", ref), ("driving", driving), ("poses", pose), ("pose_frames", pose_frames), ("ref_pose", ref_pose)) if value.strip()}
                if "reference" not in paths or not out.strip():
                    raise InputError("need ref (the reference image) and out (or a jobs_file)")
                entries = [Job(out=resolve_path(out, "output"), **paths)]
            # the node's settings are the command line's: each job's own settings override them
            jobs = [e if isinstance(e, RefusedJob) else dataclasses.replace(e, overrides={**overrides, **e.overrides}) for e in entries]
            runnable = [j for j in jobs if not isinstance(j, RefusedJob)]
            executor = JobExecutor(model.mm, overlap=False, checkpoints=checkpoint_policy(model.mm, resume=resume))
            results = []
            for n, job in enumerate(jobs, 1):
                if isinstance(job, RefusedJob):
                    results.append({"job": n, "out": str(job.out) if job.out else None, "error": job.message()})
                    continue
                check_interrupted()
                try:
                    admitted = model.mm.admit(job, others=runnable)
                    report = executor.render(admitted, hooks=ComfyProgress(), control=interrupt_control())
                except MimicError as err:  # this job fails alone; ComfyUI's interrupt and bugs propagate
                    if len(jobs) == 1:
                        raise
                    results.append({"job": n, "out": str(job.out), "error": str(err)})
                    continue
                for warning in report.warnings:
                    log.warning(f"mimic: {report.output}: {warning}")
                results.append({"job": n, "out": str(report.output), "frames": report.frames, "warnings": report.warnings,
                                "resumed_from_step": report.resumed_from_step,
                                "seconds": {k: round(v, 3) for k, v in report.seconds.items()}})
            failed = [r for r in results if "error" in r]
            if failed:
                first = failed[0]
                where = f"job {first['job']}" + (f" ({first['out']})" if first["out"] else "")
                raise InputError(f"{len(results) - len(failed)} done, {len(failed)} failed; {where}: {first['error']}")
            return {"ui": {"text": [r["out"] for r in results]},
                    "result": ("\n".join(r["out"] for r in results), json.dumps(results, indent=2))}


def _job_words() -> dict[str, str]:
    """The job node's words for our flags: its inputs, and the jobs file's keys for settings."""
    from mimic.model.config import SETTINGS

    return {**{s.flag: s.key for s in SETTINGS.values()}, "--ref": "ref", "--driving": "driving", "--pose": "pose",
            "--pose-frames": "pose_frames", "--ref-pose": "ref_pose", "--out": "out", "--jobs": "jobs_file"}


def _settings_text(text: str) -> dict:
    """The settings box: a YAML (or JSON) mapping in the jobs file's words, checked like a jobs file's."""
    from mimic.errors import InputError
    from mimic.model.config import settings_from_mapping

    if not text.strip():
        return {}
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(f"settings: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError("settings: expected `key: value` lines (a mapping), e.g. `steps: 25`")
    settings_from_mapping(data, "settings: ")  # checked now, one line naming the key
    return data


NODE_CLASS_MAPPINGS = {
    "MimicLoadModel": MimicLoadModel,
    "MimicGetPoses": MimicGetPoses,
    "MimicSampler": MimicSampler,
    "MimicDecode": MimicDecode,
    "MimicRunJobs": MimicRunJobs,
    "MimicSaveVideo": MimicSaveVideo,
    "MimicToyPuppet": MimicToyPuppet,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MimicLoadModel": "MimicMotion Load Model (mimic)",
    "MimicGetPoses": "MimicMotion Get Poses (mimic)",
    "MimicSampler": "MimicMotion Sampler (mimic)",
    "MimicDecode": "MimicMotion Decode (mimic)",
    "MimicRunJobs": "MimicMotion Run Jobs (mimic)",
    "MimicSaveVideo": "MimicMotion Save Video (mimic)",
    "MimicToyPuppet": "MimicMotion Toy Puppet (mimic)",
}
