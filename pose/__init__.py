"""DWPose for MimicMotion (layer 3, above ``mimic.media``): ONNX detection (``detector``),
pre/post-processing (``preprocess``, ``postprocess``), the exact pose drawing (``draw``),
retargeting (``retarget``), the pose sequence of a driving video (``sequence``) and its file format
(``files``), pose images served per window (``images``) and video pose extraction (``extract``).

The tiny preset's stand-in DWPose ONNX files are made by ``mimic.model.tiny_dwpose``;
tensor names and shapes come from ``mimic.spec``.
"""
