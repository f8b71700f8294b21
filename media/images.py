"""Still images: reading any common format as RGB, writing PNGs atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mimic.errors import InputError
from mimic.files import atomic_output

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MAX_IMAGE_PIXELS = 64_000_000  # 8000x8000: far beyond any useful reference (the output is <= 1024 px)


def read_image(path: Path, what: str = "image") -> np.ndarray:
    """RGB uint8 (h, w, 3) via PIL (as upstream's pil_loader), upright per its EXIF orientation
    (phone portraits), or a one-line InputError naming ``what`` (e.g. ``--ref``)."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not an image file")
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise InputError(f"{what} {path} is {im.width}x{im.height} ({im.width * im.height / 1e6:.0f} MP); "
                                     f"the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} MP: downscale it first")
                im = ImageOps.exif_transpose(im)
                return np.asarray(im.convert("RGB")).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputError(f"{what} {path} is too large to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        detail = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise InputError(f"cannot read {what} {path}: {detail}") from None


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write RGB uint8 (H, W, 3) as a PNG (OpenCV's defaults); it appears at ``path`` only when complete."""
    import cv2

    path = Path(path)
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[:, :, ::-1])):
            raise InputError(f"cannot write {path}")
    return path
