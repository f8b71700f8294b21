"""How close a render of a toy sample is to its ground truth: silhouette IoU, PSNR and SSIM per
frame, summarised by the median (the demo, the toy test and the quality bench report these)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mimic.media import quality as qm
from mimic.toy.samples import Sample


@dataclass(frozen=True)
class TruthScores:
    iou: np.ndarray  # per frame
    psnr: np.ndarray
    ssim: np.ndarray

    @property
    def median_iou(self) -> float:
        return float(np.median(self.iou))

    @property
    def median_psnr(self) -> float:
        return float(np.median(self.psnr))

    @property
    def median_ssim(self) -> float:
        return float(np.median(self.ssim))

    def line(self) -> str:
        return f"silhouette IoU {self.median_iou:.3f}, PSNR {self.median_psnr:.2f} dB, SSIM {self.median_ssim:.3f} (per-frame medians)"


def score_render(frames: np.ndarray, sample: Sample) -> TruthScores:
    """``frames``: (N, H, W, 3) uint8 renders of ``sample``'s N driving frames."""
    truth = sample.frames[: len(frames)]
    if frames.shape != truth.shape:
        raise ValueError(f"render is {frames.shape}, ground truth {truth.shape}")
    masks = qm.silhouette(frames, sample.backdrop)
    return TruthScores(iou=qm.iou(masks, sample.masks[: len(frames)]), psnr=qm.psnr(frames, truth), ssim=qm.ssim(frames, truth))
