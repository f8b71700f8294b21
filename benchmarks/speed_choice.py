"""The rule that picks the ``--speed`` presets from a ``mimic bench quality`` run, and what the run
says about them: per tier, the chosen variant and whether the tier's targets hold; the seconds ratio
beside the FLOP ratio per backend; how much the model's output depends on the sampler at all.

The rule (as ``quality_bench.recommend``): per tier, among the variants on the reference's backend
and precision whose UNet TFLOP per output frame is within the tier's cap (a share of the
reference's, the released sampler), that lose nothing measurable against the ground truth (at most
0.25 dB PSNR and 0.02 IoU below the reference, where the truth is known) and add no seams (seam
score at most 10 % above the reference's), the one closest to the reference's output (PSNR to the
25-step output). The tier's PSNR floor is then a target that the choice meets or misses, and says so;
it is never loosened. ``mimic.model.config.SPEED_PRESETS`` holds the settings this rule chose on the
toy model (benchmarks/RESULTS.md section 5c).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

TRUTH_PSNR_LOSS_DB = 0.25
TRUTH_IOU_LOSS = 0.02
SEAM_GROWTH = 1.10


@dataclass(frozen=True)
class Tier:
    name: str
    flop_cap: float  # at most this share of the reference's UNet TFLOP per output frame
    psnr_floor_db: float  # at least this PSNR to the reference's output (the target)


TIERS = (Tier("balanced", 0.40, 45.0), Tier("fast", 0.20, 35.0))


def _share(r, ref) -> float:
    a, b = r.unet_tflop_per_frame_576x1024, ref.unet_tflop_per_frame_576x1024
    if a is not None and b:
        return a / b
    return r.unet_calls / ref.unet_calls  # older results without the FLOP figure: the calls


def keeps_quality(r, ref) -> bool:
    """No measurable loss against the truth (where known) and no added seams."""
    if r.psnr_truth is not None and ref.psnr_truth is not None:
        if r.psnr_truth < ref.psnr_truth - TRUTH_PSNR_LOSS_DB or r.iou_truth < ref.iou_truth - TRUTH_IOU_LOSS:
            return False
    return not (math.isfinite(ref.seam) and math.isfinite(r.seam) and r.seam > SEAM_GROWTH * ref.seam)


def speed_choice(results: Sequence, reference: str) -> dict[str, dict | None]:
    """tier name -> {"name", "flop_share", "psnr_ref", "psnr_floor", "meets_floor", ...} or None when
    no measured variant fits the tier's cap with its quality kept."""
    ref = next((r for r in results if r.name == reference), None)
    out: dict[str, dict | None] = {}
    if ref is None:
        return {t.name: None for t in TIERS}
    for tier in TIERS:
        pool = [r for r in results if r.error is None and r.name != reference and r.backend == ref.backend and r.precision == ref.precision
                and _share(r, ref) <= tier.flop_cap + 1e-9 and keeps_quality(r, ref) and math.isfinite(r.psnr_ref)]
        if not pool:
            out[tier.name] = None
            continue
        best = max(pool, key=lambda r: (r.psnr_ref, -_share(r, ref)))
        out[tier.name] = {"name": best.name, "settings": dict(best.settings or {}), "flop_share": _share(best, ref),
                          "flop_cap": tier.flop_cap, "psnr_ref": best.psnr_ref, "psnr_floor": tier.psnr_floor_db,
                          "meets_floor": best.psnr_ref >= tier.psnr_floor_db, "psnr_truth": best.psnr_truth, "iou_truth": best.iou_truth,
                          "seam": best.seam, "reference_seam": ref.seam}
    return out


def seconds_vs_flops(results: Sequence, reference: str, names: Sequence[str] | None = None) -> list[dict]:
    """Per backend with a variant named like the reference on that backend (``onnxruntime`` or
    ``<reference>+onnxruntime``), each other variant of that backend and precision (those in
    ``names``, or that set ``speed``, when ``names`` is None): its seconds and FLOP shares of that
    backend's reference row, measured in the same run."""
    rows = []
    for base in results:
        if base.error is not None or not (base.name == reference or base.name in (base.backend, f"{reference}+{base.backend}")):
            continue
        for r in results:
            if r is base or r.error is not None or (r.backend, r.precision) != (base.backend, base.precision):
                continue
            if not ("speed" in (r.settings or {}) if names is None else r.name in names):
                continue
            if not (r.seconds and base.seconds and math.isfinite(r.seconds) and math.isfinite(base.seconds)):
                continue
            rows.append({"backend": base.backend, "precision": base.precision, "name": r.name, "baseline": base.name,
                         "seconds_share": r.seconds / base.seconds, "flop_share": _share(r, base)})
    return rows


def sampler_spread(results: Sequence, reference: str) -> dict | None:
    """How much the output depends on the sampler: the spread of PSNR to the truth (and to the
    reference's output) across every measured variant of the reference's backend and precision."""
    ref = next((r for r in results if r.name == reference), None)
    if ref is None:
        return None
    same = [r for r in results if r.error is None and (r.backend, r.precision) == (ref.backend, ref.precision)]
    truth = [r.psnr_truth for r in same if r.psnr_truth is not None]
    to_ref = [r.psnr_ref for r in same if r.name != reference and math.isfinite(r.psnr_ref)]
    return {"variants": len(same), "psnr_truth_min": min(truth) if truth else None, "psnr_truth_max": max(truth) if truth else None,
            "psnr_ref_min": min(to_ref) if to_ref else None, "psnr_ref_max": max(to_ref) if to_ref else None}


def markdown_lines(results: Sequence, reference: str, partial: bool = False) -> list[str]:
    """The speed-preset paragraph of quality.md."""
    lines = [""]
    among = " (among the variants measured so far)" if partial else ""
    for tier, choice in speed_choice(results, reference).items():
        if choice is None:
            lines.append(f"Speed preset `{tier}`{among}: no variant within its FLOP cap keeps the quality against the truth and the seams.")
            continue
        verdict = "meets" if choice["meets_floor"] else f"MISSES by {choice['psnr_floor'] - choice['psnr_ref']:.1f} dB"
        lines.append(f"Speed preset `{tier}`{among}: **{choice['name']}**, {choice['flop_share']:.1%} of the {reference} UNet FLOPs per frame "
                     f"(cap {choice['flop_cap']:.0%}), {choice['psnr_ref']:.1f} dB from its output ({verdict} the {choice['psnr_floor']:.0f} dB target).")
    for row in seconds_vs_flops(results, reference):  # the --speed variants
        lines.append(f"{row['backend']} {row['precision']}: {row['name']} took {row['seconds_share']:.0%} of {row['baseline']}'s seconds "
                     f"for {row['flop_share']:.0%} of its UNet FLOPs (same run).")
    spread = sampler_spread(results, reference)
    if spread and spread["psnr_truth_min"] is not None and spread["psnr_ref_min"] is not None:  # (the reference alone: nothing to compare)
        lines.append(f"Sampler sensitivity: across the {spread['variants']} variants the PSNR to the ground truth spans only "
                     f"{spread['psnr_truth_min']:.2f}-{spread['psnr_truth_max']:.2f} dB while the PSNR to the {reference} output spans "
                     f"{spread['psnr_ref_min']:.1f}-{spread['psnr_ref_max']:.1f} dB: this model's output depends little on the sampler, "
                     f"so its quality costs likely understate those of real weights (re-measure there).")
    return lines
