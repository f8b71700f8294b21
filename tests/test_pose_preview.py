"""The pose preview for people (``mimic pose --preview``, ``write_pose_preview``): the skeleton over
the source frame, exact pixels where it is drawn and where it is not; the side-by-side video
pictures; the contact sheet's 1-based labels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mimic.errors import InputError
from mimic.media.preview import FOOTER, HEADER, label_strip, text_scale
from mimic.pose import preview, sheet
from mimic.pose.draw import BODY_COLORS, BODY_LIMBS, DrawParts
from mimic.pose.postprocess import PoseFrame
from mimic.pose.sequence import PoseSequence

NECK, RIGHT_HIP = 1, 8


def body_pose(points: dict[int, tuple[float, float]], detected: bool = True, hand_score: float = 0.0,
              face_score: float = 0.0) -> PoseFrame:
    """One person with the given body points (normalised x, y; score 0.9), the rest hidden; the left
    hand's points 0 and 1 and face point 0 at fixed places with the given scores."""
    keypoints, scores = np.zeros((1, 134, 2)), np.zeros((1, 134))
    for index, xy in points.items():
        keypoints[0, index], scores[0, index] = xy, 0.9
    keypoints[0, 92], keypoints[0, 93] = (0.2, 0.2), (0.3, 0.2)     # left hand: edge 0 (points 0 -> 1)
    scores[0, 92:94] = hand_score
    keypoints[0, 24], scores[0, 24] = (0.8, 0.8), face_score
    return PoseFrame(keypoints, scores, np.zeros((1, 4)), detected, (360, 450))


def source_frame(height: int = 360, width: int = 450, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth_frame(height: int, width: int, k: int) -> np.ndarray:
    """A gradient that H.264 keeps close (random noise it does not)."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([40 + 150 * ys / height, 200 - 120 * xs / width, np.full(ys.shape, 30 + 40 * k)], -1).astype(np.uint8)


def segment_distance(height: int, width: int, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Per pixel: the distance from the pixel centre to the segment a-b (pixels)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    (ax, ay), (bx, by) = a, b
    t = np.clip(((xs - ax) * (bx - ax) + (ys - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
    return np.hypot(xs - (ax + t * (bx - ax)), ys - (ay + t * (by - ay)))


def test_overlay_draws_skeleton_colours_over_the_dimmed_source():
    """A vertical neck-hip limb on a random frame, 450x360 (limb width 4, joint radius 4): inside the
    limb the pixels are its colour, inside each joint disc the joint's colour, and every pixel more
    than 6 px from the limb (its rim, anti-aliased, included) is the source at 60 %, exactly."""
    src = source_frame()
    a, b = (225.0, 90.0), (225.0, 270.0)                     # 0.5·450, 0.25·360 / 0.75·360
    pose = body_pose({NECK: (0.5, 0.25), RIGHT_HIP: (0.5, 0.75)})
    out = sheet.overlay_pose(src, pose)
    assert out.shape == src.shape and out.dtype == np.uint8 and sheet.overlay_width(360, 450) == 4
    dist = segment_distance(360, 450, a, b)
    away = dist > 6
    assert np.array_equal(out[away], (src[away].astype(int) * 60 // 100).astype(np.uint8))
    assert away.sum() > 0.98 * away.size
    # limb 6 = (1, 8): [0, 255, 0]; drawn as the model draws (BGR values) -> shown reversed in RGB
    limb = BODY_COLORS[BODY_LIMBS.index((NECK, RIGHT_HIP))][::-1]
    core = (dist <= 1.0) & (np.mgrid[0:360, 0:450][0] > 100) & (np.mgrid[0:360, 0:450][0] < 260)  # rows 101-259
    assert core.sum() >= 3 * 150 and (out[core] == limb).all()
    ys, xs = np.mgrid[0:360, 0:450]
    for joint, (x, y) in ((NECK, a), (RIGHT_HIP, b)):     # joints are drawn after the limbs
        disc = np.hypot(xs - x, ys - y) <= 2.0
        assert (out[disc] == BODY_COLORS[joint][::-1]).all()


def test_overlay_draws_nothing_of_an_excluded_part_or_an_unsure_hand():
    """Parts switched off, and hands/face points below 0.3, leave the dimmed source untouched."""
    src = source_frame(seed=1)
    dimmed = (src.astype(int) * 60 // 100).astype(np.uint8)
    body = {NECK: (0.5, 0.25), RIGHT_HIP: (0.5, 0.75)}
    sure, unsure = body_pose(body, hand_score=0.9, face_score=0.9), body_pose({}, hand_score=0.29, face_score=0.29)
    assert np.array_equal(sheet.overlay_pose(src, sure, DrawParts(False, False, False)), dimmed)
    assert np.array_equal(sheet.overlay_pose(src, unsure), dimmed)
    drawn = sheet.overlay_pose(src, sure)
    hand_edge = drawn[72, 100:120]                           # y = 0.2·360, edge 0 from x = 90 to 135: HSV(0) red
    assert (hand_edge == [0, 0, 255]).all()                  # [255, 0, 0] written as BGR, shown reversed
    assert np.array_equal(sheet.overlay_pose(src, sure, DrawParts(hands=False))[72, 100:120], dimmed[72, 100:120])
    assert (drawn[288, 360] == 255).all()                    # the face dot (white) at (0.8·450, 0.8·360)
    assert np.array_equal(sheet.overlay_pose(src, sure, DrawParts(face=False))[288, 360], dimmed[288, 360])
    no_body = sheet.overlay_pose(src, sure, DrawParts(body=False))
    assert np.array_equal(no_body[150:250, 220:231], dimmed[150:250, 220:231])


def test_preview_picture_is_source_then_overlay_with_names_and_caption():
    src = source_frame(64, 48, seed=2)
    pose = body_pose({NECK: (0.5, 0.25), RIGHT_HIP: (0.5, 0.75)}, detected=False)
    caption = preview.frame_caption(1, 4, 0.0, pose)
    assert caption == "frame 1 of 4   t = 0.00 s   no person box (whole frame used)"
    two = PoseFrame(np.zeros((2, 134, 2)), np.zeros((2, 134)), np.zeros((2, 4)), True, (64, 48))
    assert preview.frame_caption(12, 40, 0.4567, two) == "frame 12 of 40   t = 0.46 s   2 people"
    pic = preview.preview_picture(src, pose, caption)
    assert pic.shape == (HEADER + 64 + FOOTER, 2 * 48 + preview.DIVIDER, 3)
    scale = text_scale(48)
    assert np.array_equal(pic[HEADER:HEADER + 64, :48], src)
    assert np.array_equal(pic[HEADER:HEADER + 64, 50:], sheet.overlay_pose(src, pose))
    assert np.array_equal(pic[:HEADER, :48], label_strip("source", 48, HEADER, scale))
    assert np.array_equal(pic[:HEADER, 50:], label_strip("pose", 48, HEADER, scale))
    assert np.array_equal(pic[HEADER + 64:], label_strip(caption, 98, FOOTER, scale))


def _label(text: str, width: int, colour) -> np.ndarray:
    strip = np.full((sheet.LABEL_HEIGHT, width, 3), sheet.LABEL_STRIP, dtype=np.uint8)
    cv2.putText(strip, text, (4, sheet.LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, sheet.label_scale(text, width), colour, 1,
                lineType=cv2.LINE_AA)
    return strip


def test_contact_sheet_tiles_are_overlays_labelled_from_frame_1_at_0_s():
    poses = [body_pose({NECK: (0.5, 0.2 + 0.05 * k), RIGHT_HIP: (0.5, 0.7)}, detected=k != 1) for k in range(3)]
    times = [0.5, 0.75, 1.0]                                 # the first sampled frame is "0.00 s"
    frames = {k: source_frame(360, 450, seed=k) for k in range(2)}   # frame 3's source missing: on black
    pic = sheet.contact_sheet(poses, (360, 450), times, frames=frames)
    tile_h, tile_w = sheet.tile_size((360, 450))
    assert (tile_h, tile_w) == (128, 160)
    for k, text, colour in ((0, "frame 1  0.00 s", sheet.LABEL_TEXT), (1, "frame 2  0.25 s", sheet.NO_BOX_TEXT),
                            (2, "frame 3  0.50 s", sheet.LABEL_TEXT)):
        x, y = sheet.GAP + k * (tile_w + sheet.GAP), sheet.GAP
        expected = (sheet.overlay_pose(sheet.fit(frames[k], (tile_h, tile_w)), poses[k]) if k in frames
                    else sheet.draw_preview_pose(poses[k], tile_h, tile_w))
        assert np.array_equal(pic[y:y + tile_h, x:x + tile_w], expected)
        assert np.array_equal(pic[y + tile_h:y + tile_h + sheet.LABEL_HEIGHT, x:x + tile_w], _label(text, tile_w, colour))
    long_label = "frame 7200  299.96 s"                      # 117 px at 0.4: fits a 160-px tile, not a 100-px one
    assert sheet.label_scale(long_label, 160) == sheet.LABEL_SCALE > sheet.label_scale(long_label, 100)
    assert cv2.getTextSize(long_label, cv2.FONT_HERSHEY_SIMPLEX, sheet.label_scale(long_label, 100), 1)[0][0] <= 92


def test_write_pose_preview_streams_the_source_under_the_poses(tmp_path):
    from mimic.media.images import read_image
    from mimic.media.video_reader import iter_sampled_frames
    from mimic.media.video_writer import write_rgb_video

    video = write_rgb_video(tmp_path / "src.mp4", [smooth_frame(96, 64, k) for k in range(6)], fps=24)
    poses = [body_pose({NECK: (0.5, 0.2 + 0.05 * k), RIGHT_HIP: (0.5, 0.7)}) for k in range(3)]
    seq = PoseSequence(tuple(poses), (0.0, 1 / 12, 2 / 12), (96, 64), 24.0, 2, 2, "src.mp4")
    out, png = preview.write_pose_preview(seq, video, tmp_path / "p.mp4", long_side=96)
    assert (out, png) == (tmp_path / "p.mp4", tmp_path / "p.png")
    sources = [rgb for _, rgb in iter_sampled_frames(video, 2)]
    assert len(sources) == 3
    got = [rgb for _, rgb in iter_sampled_frames(out, 1)]
    assert len(got) == 3
    for k, (picture, src) in enumerate(zip(got, sources)):  # H.264: close to the exact picture, not equal
        want = preview.preview_picture(src, poses[k], preview.frame_caption(k + 1, 3, k / 12, poses[k]))
        assert picture.shape == want.shape == (HEADER + 96 + FOOTER, 2 * 64 + 2, 3)
        panels = slice(HEADER, HEADER + 96)
        error = np.abs(picture[panels].astype(int) - want[panels]).mean()     # 2.2-2.7 here
        undimmed = np.abs(picture[panels, 66:].astype(int) - src).mean()        # the right half is not the plain source
        assert error < 4 < 10 < undimmed, (error, undimmed)
    tiles = {k: sheet.fit(src, sheet.tile_size((96, 64))) for k, src in enumerate(sources)}
    assert np.array_equal(read_image(png), sheet.contact_sheet(poses, (96, 64), seq.frame_times_s, frames=tiles))
    # no source video: the skeletons on black, the sheet too
    out, png = preview.write_pose_preview(seq, None, tmp_path / "black.mp4", long_side=96)
    assert np.array_equal(read_image(png), sheet.contact_sheet(poses, (96, 64), seq.frame_times_s))
    assert next(iter_sampled_frames(out, 1))[1].shape == (HEADER + 96 + FOOTER, 64, 3)
    with pytest.raises(InputError, match="is 64x96 but the poses were extracted from a 128x96 video"):
        preview.write_pose_preview(PoseSequence(tuple(poses), seq.frame_times_s, (96, 128), 24.0, 2, 2), video, tmp_path / "x.mp4")
