"""DWPose for MimicMotion (layer 3, above ``mimic.media``): ONNX detection (``detector``),
pre/post-processing (``preprocess``, ``postprocess``), the exact pose drawing (``draw``),
retargeting (``retarget``), the pose sequence of a driving video (``sequence``) and its file format
(``files``), pose images served per window (``images``), video pose extraction (``extract``), and
the pictures for people: skeletons over the source frames and the contact sheet (``sheet``), the
pose preview video + sheet (``preview``: ``write_pose_preview``).

The tiny preset's stand-in DWPose ONNX files are made by ``mimic.model.tiny_dwpose``;
tensor names and shapes come from ``mimic.spec``.
"""
