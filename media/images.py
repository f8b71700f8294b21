"""Still images: reading any common format as RGB, writing PNGs atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mimic.errors import InputError
from mimic.files import atomic_output

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (h, w, 3) via PIL (as upstream's pil_loader), one-line error otherwise."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"cannot read image {path}: {err.__class__.__name__}") from None


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write RGB uint8 (H, W, 3) as a PNG (OpenCV's defaults); it appears at ``path`` only when complete."""
    import cv2

    path = Path(path)
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[:, :, ::-1])):
            raise InputError(f"cannot write {path}")
    return path
