"""DWPose for MimicMotion: ONNX detection (``detector``), pre/post-processing, the exact pose
drawing (``draw``), retargeting (``retarget``) and tiny stand-in models (``tiny_models``)."""
