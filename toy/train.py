"""Train the toy MimicMotion on procedurally rendered puppets: ``python -m mimic.toy.train``.

Two stages, each given a wall-clock budget (the learning-rate schedules run on elapsed time, so a
busy machine trains fewer steps instead of overrunning):

1. **VAE** (``AutoencoderKLTemporalDecoder``): whole frames, two consecutive ones per step (the
   temporal decoder sees motion; crops would change the GroupNorm statistics the decoder relies on),
   L1 + MSE reconstruction + 1e-6 KL, from the near-identity start of ``vae_init`` (a blurry
   but working autoencoder at step 0; from a random start the loss did not move in 12 minutes).
   Then every training frame is encoded once (posterior mode) and the scaling factor is set to
   1 / std of those latents.
2. **UNet + PoseNet**, conditioned exactly as ``mimicmotion_ref.pipeline`` conditions them at
   inference: a clip is [reference, 7 consecutive driving frames] (frame 0 is the reference slot,
   posed by the reference's own pose image); the input is c_in (x0 + sigma eps) concatenated on the
   channels with the unscaled reference latents; timestep 0.25 ln sigma; CLIP image embedding of
   the reference from a frozen randomly initialised tiny CLIP; added time ids [fps 7 - 1,
   motion bucket 127, noise aug 0]; PoseNet output added after conv_in. sigma is SVD's training
   distribution, ln sigma ~ N(0.7, 1.6^2), one per clip; the target is v = (eps - sigma x0) /
   sqrt(sigma^2 + 1) (MSE on v equals the EDM-weighted x0 loss). 10% of clips drop all conditioning
   (zero embedding, zero reference latents, no pose) so classifier-free guidance works.

Every 10 steps a line goes to the CSV log (stage, step, seconds, loss, lr, threads); the weights are
written in the released formats (``weights_io``) at the end, with a JSON summary (times, final
losses, which device trained). torch uses both cores with OMP_WAIT_POLICY=PASSIVE (set below), so
other processes on the same cores slow it down instead of making it crawl.

Run: ``python -m mimic.toy.train [--vae-minutes 10 --unet-minutes 38 --out DIR ...]`` (every
``TrainConfig`` field is an option); the committed weights came from the defaults in 49.6 min.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads crawl on shared cores

import argparse
import copy
import csv
import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mimic.toy import configs as C

SIGMA_P_MEAN, SIGMA_P_STD = 0.7, 1.6  # SVD's ln-sigma training distribution
ADDED_TIME_IDS = (6.0, 127.0, 0.0)  # fps 7 - 1, motion bucket 127, no noise augmentation
CLIP_SEED = 20240701


@dataclass(frozen=True)
class TrainConfig:
    out: Path = C.WEIGHTS_DIR
    log: Path = C.TRAIN_LOG
    summary: Path = C.TRAIN_SUMMARY
    seed: int = 0
    clips: int = 160
    clip_frames: int = 12  # driving frames per training clip
    window: int = 8  # frames per UNet training sample, the reference slot included
    vae_minutes: float = 10.0
    unet_minutes: float = 38.0
    vae_batch_frames: int = 2
    vae_lr: float = 5e-4
    unet_batch: int = 2
    unet_lr: float = 6e-4
    cond_drop: float = 0.1
    ema: float = 0.99
    max_threads: int = 2


class CsvLog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w", newline="")
        self.w = csv.writer(self.f)
        self.w.writerow(["stage", "step", "seconds", "loss", "lr", "threads"])

    def row(self, *values) -> None:
        self.w.writerow([f"{v:.5g}" if isinstance(v, float) else v for v in values])
        self.f.flush()


def pick_threads(max_threads: int) -> int:
    """All allowed cores. Two spinning OpenMP threads on cores other processes keep busy run ~10x
    slower than one; with OMP_WAIT_POLICY=PASSIVE (set above) they run as fast as one at worst."""
    return max(1, min(max_threads, os.cpu_count() or 1))


def lr_at(frac: float, peak: float, warmup: float = 0.03) -> float:
    if frac < warmup:
        return peak * frac / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warmup) / (1 - warmup)))))


class Data:
    """Every training clip rendered once: frames, pose images, references (uint8, in memory)."""

    def __init__(self, cfg: TrainConfig):
        from mimic.toy.samples import make_sample

        self.frames, self.poses, self.refs = [], [], []
        for k in range(cfg.clips):
            s = make_sample(cfg.seed * 100_000 + k, C.TOY_HW, cfg.clip_frames)
            self.frames.append(np.concatenate([s.reference[None], s.frames]))  # (1 + N, H, W, 3): slot 0 = reference
            self.poses.append(s.pose_images())  # (1 + N, 3, H, W)
            self.refs.append(s.reference)
        self.frames = np.stack(self.frames)
        self.poses = np.stack(self.poses)


def to_pixels(frames_u8: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [-1, 1]."""
    x = torch.from_numpy(frames_u8).float() / 127.5 - 1
    return x.movedim(-1, -3)


def train_vae(cfg: TrainConfig, data: Data, log: CsvLog, rng: np.random.Generator):
    from diffusers import AutoencoderKLTemporalDecoder

    torch.manual_seed(cfg.seed)
    from mimic.toy.vae_init import init_vae_near_identity

    vae = AutoencoderKLTemporalDecoder.from_config(C.TOY_VAE_CONFIG)
    sample = to_pixels(data.frames[:, :4].reshape(-1, *data.frames.shape[2:]))
    init_vae_near_identity(vae, tuple(sample.mean((2, 3)).mean(0).tolist()), tuple(sample.std((2, 3)).mean(0).tolist()))
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    budget = cfg.vae_minutes * 60
    t0, step, losses = time.time(), 0, []
    n_clips, n_frames = data.frames.shape[:2]
    while (elapsed := time.time() - t0) < budget:
        if step % 25 == 0:
            torch.set_num_threads(pick_threads(cfg.max_threads))
        lr = lr_at(elapsed / budget, cfg.vae_lr)
        for g in opt.param_groups:
            g["lr"] = lr
        c = rng.integers(n_clips)
        start = rng.integers(0, n_frames - cfg.vae_batch_frames + 1)
        x = to_pixels(np.ascontiguousarray(data.frames[c, start : start + cfg.vae_batch_frames]))
        post = vae.encode(x).latent_dist
        y = vae.decode(post.sample(), num_frames=x.shape[0]).sample
        rec = F.l1_loss(y, x) + F.mse_loss(y, x)
        loss = rec + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(rec.item())
        step += 1
        if step % 10 == 0:
            log.row("vae", step, time.time() - t0, float(np.mean(losses[-10:])), lr, torch.get_num_threads())
    return vae.eval(), {"steps": step, "seconds": time.time() - t0, "final_recon_loss": float(np.mean(losses[-50:]))}


@torch.no_grad()
def encode_all(vae, data: Data) -> torch.Tensor:
    """Posterior modes of every frame, (clips, 1 + N, 4, h, w), unscaled."""
    torch.set_num_threads(pick_threads(2))
    out = []
    for clip in data.frames:
        out.append(torch.cat([vae.encode(to_pixels(clip[s : s + 7])).latent_dist.mode() for s in range(0, len(clip), 7)]))
    return torch.stack(out)


def tiny_clip():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CLIP_SEED)
        return CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(C.TOY_CLIP_CONFIG)).float().eval()


@torch.no_grad()
def clip_embeds(clip, refs: list[np.ndarray]) -> torch.Tensor:
    from mimic.model import preprocess as pre

    fe = C.TOY_FEATURE_EXTRACTOR_CONFIG
    return torch.cat([clip(pre.clip_pixels(r, fe["image_mean"], fe["image_std"])).image_embeds for r in refs]).unsqueeze(1)  # (clips, 1, D)


def v_target(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return (eps - sigma * x0) / (sigma**2 + 1).sqrt()


def train_unet(cfg: TrainConfig, data: Data, latents: torch.Tensor, embeds: torch.Tensor, scaling: float, log: CsvLog, rng: np.random.Generator):
    from mimic.model.pose_net import PoseNet
    from mimic.model.unet import PoseUNet

    torch.manual_seed(cfg.seed + 1)
    unet = PoseUNet.from_config(C.TOY_UNET_CONFIG)
    pose_net = PoseNet(noise_latent_channels=C.TOY_UNET_CONFIG["block_out_channels"][0])
    params = list(unet.parameters()) + list(pose_net.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    ema_unet, ema_pose = copy.deepcopy(unet).eval(), copy.deepcopy(pose_net).eval()
    ids = torch.tensor([ADDED_TIME_IDS])
    budget = cfg.unet_minutes * 60
    n_clips, n_frames = latents.shape[:2]
    t0, step, losses = time.time(), 0, []
    b, t = cfg.unet_batch, cfg.window
    while (elapsed := time.time() - t0) < budget:
        if step % 25 == 0:
            torch.set_num_threads(pick_threads(cfg.max_threads))
        lr = lr_at(elapsed / budget, cfg.unet_lr)
        for g in opt.param_groups:
            g["lr"] = lr
        clips = rng.integers(n_clips, size=b)
        starts = rng.integers(1, n_frames - (t - 1) + 1, size=b)
        idx = [[0] + list(range(s, s + t - 1)) for s in starts]
        x0 = torch.stack([latents[c, i] for c, i in zip(clips, idx)]) * scaling  # (B, T, 4, h, w)
        ref = torch.stack([latents[c, 0] for c in clips])  # (B, 4, h, w), unscaled
        emb = embeds[clips].clone()
        pose_px = torch.from_numpy(np.stack([data.poses[c, i] for c, i in zip(clips, idx)])).float() / 127.5 - 1  # (B, T, 3, H, W)
        sigma = torch.exp(SIGMA_P_MEAN + SIGMA_P_STD * torch.randn(b)).view(b, 1, 1, 1, 1)
        eps = torch.randn_like(x0)
        x_in = (x0 + sigma * eps) / (sigma**2 + 1).sqrt()
        keep = (torch.rand(b) >= cfg.cond_drop).float()
        ref = ref * keep.view(b, 1, 1, 1)
        emb = emb * keep.view(b, 1, 1)
        sample = torch.cat([x_in, ref.unsqueeze(1).expand(-1, t, -1, -1, -1)], dim=2)
        pose_lat = pose_net(pose_px.flatten(0, 1)) * keep.repeat_interleave(t).view(-1, 1, 1, 1)
        v = unet(sample, 0.25 * sigma.flatten().log(), emb, ids.expand(b, -1), pose_latents=pose_lat)
        loss = F.mse_loss(v, v_target(x0, eps, sigma))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_pose, pose_net)):
                for pe, pl in zip(ema.parameters(), live.parameters()):
                    pe.lerp_(pl, 1 - decay)
        losses.append(loss.item())
        step += 1
        if step % 10 == 0:
            log.row("unet", step, time.time() - t0, float(np.mean(losses[-10:])), lr, torch.get_num_threads())
    return ema_unet, ema_pose, {"steps": step, "seconds": time.time() - t0, "final_v_loss": float(np.mean(losses[-100:]))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m mimic.toy.train", description=__doc__.split("\n\n")[0])
    for f, default in asdict(TrainConfig()).items():
        ap.add_argument("--" + f.replace("_", "-"), type=type(default) if not isinstance(default, Path) else Path, default=default)
    cfg = TrainConfig(**vars(ap.parse_args(argv)))
    t_start = time.time()
    rng = np.random.default_rng(cfg.seed)
    log = CsvLog(cfg.log)
    print(f"rendering {cfg.clips} clips of {cfg.clip_frames} frames at {C.TOY_HW[0]}x{C.TOY_HW[1]}", flush=True)
    data = Data(cfg)
    t_data = time.time() - t_start
    print(f"  {t_data:.0f} s; VAE for {cfg.vae_minutes} min", flush=True)
    vae, vae_info = train_vae(cfg, data, log, rng)
    print(f"  VAE: {vae_info}; encoding", flush=True)
    t_enc = time.time()
    latents = encode_all(vae, data)
    scaling = float(1.0 / latents.std())
    clip = tiny_clip()
    embeds = clip_embeds(clip, data.refs)
    t_enc = time.time() - t_enc
    print(f"  encoded in {t_enc:.0f} s, scaling factor {scaling:.4f}; UNet for {cfg.unet_minutes} min", flush=True)
    unet, pose_net, unet_info = train_unet(cfg, data, latents, embeds, scaling, log, rng)
    from mimic.toy.weights_io import total_bytes, write_toy_weights

    write_toy_weights(cfg.out, unet=unet, pose_net=pose_net, vae=vae, clip=clip, scaling_factor=scaling)
    summary = {
        "config": {k: _portable(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "device": f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "data_seconds": t_data,
        "vae": vae_info,
        "encode_seconds": t_enc,
        "scaling_factor": scaling,
        "unet": unet_info,
        "total_seconds": time.time() - t_start,
        "weights_bytes": total_bytes(cfg.out),
    }
    cfg.summary.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2), flush=True)
    return summary


if __name__ == "__main__":
    main()


def _portable(path: Path) -> str:
    """A path as it should be recorded in the committed summary: relative to the repository (no
    machine paths), or as given when it lies elsewhere."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return Path(path).name
