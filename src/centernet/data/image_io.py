"""Image loading: BGR ``uint8`` pixels exactly as the original's ``cv2.imread`` gives them, with clear errors.

One decoder for every pass: ``load_image`` (training, validation, predict, INT8 calibration) and
``verify_image`` (the decode pass of ``centernet data check`` and of ``train`` before its first
step) both decode with ``decode_image``: the file's bytes, read by Python, handed to
``cv2.imdecode``. So what the check passes, training can read, and no file name (one that is not
valid UTF-8, say) ever reaches OpenCV, whose path functions crash on such names.

OpenCV's default colour decode already does what training needs and what the original saw:
EXIF orientation applied, grey and palette images expanded to three channels, the alpha channel of
RGBA dropped, 16-bit images scaled to 8 bits (``value >> 8``). This module adds what ``cv2.imread``
lacks: an error naming the file instead of ``None``, and a check for truncated JPEGs.

Truncated JPEG (no end-of-image marker): libjpeg decodes such a file and fills the missing part
with grey, printing only "Premature end of JPEG file". The labels then describe pixels that are not
there, so by default this is an error naming the file; ``allow_truncated=True`` loads it with a
warning instead (for data sets where a few damaged files are known and accepted).

Corrupt data inside a JPEG (flipped bytes mid-stream) is worse: libjpeg decodes garbage for the
rest of the image and only prints "Corrupt JPEG data: ..." on stderr. ``verify_image`` (the
decode pass of ``centernet data check`` and of ``train`` before its first step) decodes JPEGs
with libjpeg-turbo in strict mode (``simplejpeg``), which turns those warnings into errors, and
other formats fully with Pillow (``Image.load`` refuses truncated PNG / TIFF streams).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"
# Entropy-coded JPEG data byte-stuffs every 0xFF, so an end marker in the tail is a real one; the
# tail window tolerates padding or vendor data that some cameras append after the marker.
_JPEG_TAIL_BYTES = 1024
# EXIF orientations 5..8 rotate by 90 degrees: width and height swap.
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
# libjpeg-turbo cannot convert CMYK to BGR; the check decodes each stream in its own colour space.
_JPEG_DECODE_AS = {"Gray": "GRAY", "CMYK": "CMYK", "YCCK": "CMYK"}


class ImageReadError(OSError):
    """An image file that is missing, unreadable, not an image, or damaged; the message names it."""


def _not_a_file(path: Path) -> str:
    if path.is_dir():
        return f"{path}: is a folder, not an image file"
    if path.is_symlink():
        return f"{path}: image file not found (a broken or looping symbolic link)"
    return f"{path}: image file not found"


def _read_bytes(path: Path) -> bytes:
    """The whole file, or ``ImageReadError`` naming it (missing, a folder, a broken link, unreadable, empty)."""
    if not path.is_file():
        raise ImageReadError(_not_a_file(path))
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read image file ({error.strerror or error})") from error
    if not data:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    return data


def _is_truncated_jpeg(data: bytes) -> bool:
    """Whether ``data`` is a JPEG stream without its end-of-image marker."""
    return data[: len(_JPEG_START)] == _JPEG_START and _JPEG_END not in data[-_JPEG_TAIL_BYTES:]


def decode_image(data: bytes, path: str | Path, allow_truncated: bool = False) -> np.ndarray:
    """The one decoder: an image file's bytes as ``cv2.imread`` would give its pixels.

    ``cv2.imdecode`` on the bytes; a truncated JPEG allowed by ``allow_truncated`` gets its
    end-of-image marker appended first (libjpeg then fills the missing part with grey, exactly as
    ``cv2.imread`` does with the file, where ``imdecode`` alone refuses the stream).

    Raises:
        ImageReadError: Not a decodable image, or a truncated JPEG (unless ``allow_truncated``);
            the message starts with ``path``.
    """
    if _is_truncated_jpeg(data):
        if not allow_truncated:
            raise ImageReadError(f"{path}: truncated JPEG (no end-of-image marker); re-download or remove it")
        warnings.warn(f"{path}: truncated JPEG loaded, its missing part is grey", stacklevel=3)
        data = data + _JPEG_END
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:
        raise ImageReadError(f"{path}: not a decodable image ({len(data)} bytes; OpenCV: {str(error).strip()})") from error
    if image is None:
        raise ImageReadError(f"{path}: not a decodable image ({len(data)} bytes)")
    return image


def load_image(path: str | Path, allow_truncated: bool = False) -> np.ndarray:
    """Reads an image file as the network's data pipeline expects it (``decode_image`` of its bytes).

    Args:
        path: Any format OpenCV decodes (JPEG, PNG, BMP, TIFF, WebP...).
        allow_truncated: Load a JPEG without end marker (missing part grey) with a warning
            instead of raising.

    Returns:
        ``uint8 [H, W, 3]`` BGR pixels, EXIF orientation applied.

    Raises:
        ImageReadError: The file is missing, unreadable, not a decodable image, or a truncated
            JPEG (unless ``allow_truncated``). The message starts with the file name.
    """
    path = Path(path)
    return decode_image(_read_bytes(path), path, allow_truncated)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image as ``load_image`` returns it, from the file header only.

    Raises:
        ImageReadError: The file is missing or not an image; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(_not_a_file(path))
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError) as error:
        raise ImageReadError(f"{path}: not a readable image ({error})") from error
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return width, height


def verify_image(path: str | Path) -> tuple[int, int]:
    """Decodes an image file as training will (``decode_image``) and returns its size.

    Stricter than ``load_image``, never looser: after the decode training uses, a JPEG whose
    entropy-coded data is corrupt (which libjpeg only warns about) is refused by libjpeg-turbo in
    strict mode (``simplejpeg``), and a truncated PNG or TIFF by Pillow's full decode.

    Returns:
        ``(width, height)`` of the decoded pixels (EXIF orientation applied).

    Raises:
        ImageReadError: The file is missing, unreadable, empty, not an image, truncated or
            corrupt; the message starts with the file name and says which.
    """
    path = Path(path)
    data = _read_bytes(path)
    height, width = decode_image(data, path).shape[:2]
    if data[: len(_JPEG_START)] == _JPEG_START:
        try:
            _, _, colorspace, _ = simplejpeg.decode_jpeg_header(data)
            simplejpeg.decode_jpeg(data, colorspace=_JPEG_DECODE_AS.get(colorspace, "BGR"), strict=True)
        except ValueError as error:
            raise ImageReadError(f"{path}: corrupt JPEG ({error}); its pixels would be garbage") from error
    else:
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        except (UnidentifiedImageError, Image.DecompressionBombError):
            pass  # a format Pillow does not read (or refuses as too large): OpenCV's decode above decided
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageReadError(f"{path}: damaged image ({error})") from error
    return int(width), int(height)
