"""Production model code: generation settings, weight loading, presets, scheduler, preprocessing,
windows and model info (the reference pipeline that tests compare against is ``mimic.mimicmotion_ref``)."""
