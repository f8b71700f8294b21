"""Media I/O: video reading (:mod:`.video_reader`), the one streaming H.264 writer and the PNG
sequence writer (:mod:`.video_writer`), audio copying (:mod:`.audio`) and still images
(:mod:`.images`). Every file is published atomically through :mod:`mimic.files`.

Layer 2: imports only ``mimic.errors``, ``mimic.files``, ``mimic.spec``, ``mimic.logs`` and
third-party packages.
"""
