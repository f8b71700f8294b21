"""Still images: reading any common format as the 8-bit RGB picture a viewer shows, writing PNGs
atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mimic.errors import InputError
from mimic.files import atomic_output

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MAX_IMAGE_PIXELS = 64_000_000  # 8000x8000: far beyond any useful reference (the output is <= 1024 px)
_GRAY16_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
# EXIF orientation -> the numpy steps that show the stored pixels upright (as ImageOps.exif_transpose)
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
           8: lambda a: np.rot90(a, 1)}


def read_image(path: Path, what: str = "image", background: int = 255) -> np.ndarray:
    """RGB uint8 (h, w, 3): the picture a viewer shows, whatever the file's mode, upright per its EXIF
    orientation (phone portraits); or a one-line InputError naming ``what`` (e.g. ``--ref``).

    16-bit samples are rounded to 8 bits (v / 257), never clipped; palettes, CMYK and 1-bit
    pictures become RGB; float pictures are taken as 0..1 (or as 0..255 where a value exceeds 1,
    as PIL writes them); transparent pixels are composited over ``background`` (a gray level:
    white, as viewers show a picture on a page; 0 for pose images, drawn on black) rather than
    exposing the colour stored under them."""
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
                rgb = _read_deep_colour(path, background) if _deep_colour(im, path) else None
                if rgb is not None:  # PIL would keep only the high byte of each 16-bit colour sample
                    return np.ascontiguousarray(_ORIENT.get(im.getexif().get(0x0112), lambda a: a)(rgb))
                return _viewed_rgb(ImageOps.exif_transpose(im), background)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputError(f"{what} {path} is too large to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        detail = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise InputError(f"cannot read {what} {path}: {detail}") from None


def _viewed_rgb(im, background: int) -> np.ndarray:
    """RGB uint8 of an opened PIL image in any mode (see :func:`read_image`)."""
    alpha = None
    if im.mode in _GRAY16_MODES or im.mode == "F":
        values = np.asarray(im)
        if im.mode == "F":
            values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
            gray = values * 255 if values.max(initial=0) <= 1 else values
        else:
            gray = values.astype(np.float32) / 257
            if isinstance(im.info.get("transparency"), int):  # a PNG tRNS gray level
                alpha = np.where(values == im.info["transparency"], 0, 1).astype(np.float32)
        colour = np.repeat(np.clip(gray, 0, 255)[..., None], 3, axis=2)
    elif im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))
        colour, alpha = rgba[..., :3].astype(np.float32), rgba[..., 3].astype(np.float32) / 255
    else:
        return np.asarray(im.convert("RGB")).copy()
    return _over(colour, alpha, background)


def _over(colour: np.ndarray, alpha: np.ndarray | None, background: int) -> np.ndarray:
    """0..255 float colour composited (``alpha`` 0..1, or None: opaque) over a gray background, as uint8."""
    if alpha is not None:
        colour = colour * alpha[..., None] + background * (1 - alpha[..., None])
    return np.rint(colour).astype(np.uint8)


def _deep_colour(im, path: Path) -> bool:
    """A PNG or TIFF with 16-bit colour (or gray + alpha) samples, which PIL opens as 8-bit RGB/RGBA/LA."""
    if im.mode not in ("RGB", "RGBA", "LA"):
        return False
    if im.format == "PNG":
        with open(path, "rb") as f:
            return f.read(26)[24:25] == b"\x10"  # IHDR bit depth
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    return False


def _read_deep_colour(path: Path, background: int) -> np.ndarray | None:
    """RGB uint8 of a 16-bit colour PNG/TIFF via OpenCV (which keeps all 16 bits), alpha composited;
    None where OpenCV cannot give 16-bit BGR(A) (PIL's 8 bits are then within one level)."""
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None or data.dtype != np.uint16 or data.ndim != 3 or data.shape[2] not in (3, 4):
        return None
    colour = data[..., 2::-1].astype(np.float32) / 257
    alpha = data[..., 3].astype(np.float32) / 65535 if data.shape[2] == 4 else None
    return _over(colour, alpha, background)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write RGB uint8 (H, W, 3) as a PNG (OpenCV's defaults); it appears at ``path`` only when complete."""
    import cv2

    path = Path(path)
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[:, :, ::-1])):
            raise InputError(f"cannot write {path}")
    return path
