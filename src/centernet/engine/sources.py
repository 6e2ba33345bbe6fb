"""Prediction inputs, read lazily as BGR frames: an image, a folder, a glob, a video, a webcam or a stream.

Files are read one at a time, so a folder of any size or a long video never sits in memory. A file
that cannot be read (missing, empty, not an image, truncated, a video that does not open) is
skipped with a warning and recorded, so one damaged file does not stop a run. A webcam or a
network stream that cannot be opened is an error: there is nothing else to read.
"""
from __future__ import annotations

import glob
import logging
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from centernet.data.image_io import load_image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg"}
#: URL schemes handed to OpenCV's video reader (FFmpeg) as streams; ``file://`` reads a local
#: video through the same path.
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "file")

#: ``(source, reason)`` of every input that was skipped, in reading order.
Skipped = list[tuple[str, str]]


@dataclass
class Frame:
    """One input picture: where it came from, its pixels (BGR uint8) and, for video, its index.

    ``path`` is the file; for a webcam or stream it is a name made from the source (``webcam0``,
    ``rtsp_camera_local_live``), so that ``name`` gives usable output file names. ``fps`` is the
    frame rate a video or stream reports (``None`` for images, and where it reports none).
    """

    path: Path
    image: np.ndarray
    frame_index: int | None = None
    fps: float | None = None

    @property
    def name(self) -> str:
        if self.frame_index is None:
            return self.path.name
        return f"{self.path.stem}_{self.frame_index:06d}.jpg"


def stream_target(source: str | int | Path) -> int | str | None:
    """What ``cv2.VideoCapture`` opens for a webcam or stream source, else ``None`` (files).

    A webcam is an ``int`` or a string of digits (``0``, ``"1"``); a stream is a URL whose scheme is
    one of ``STREAM_SCHEMES``.
    """
    if isinstance(source, bool):
        return None
    if isinstance(source, int):
        return source
    text = str(source).strip()
    if text.isdigit() and not Path(text).exists():
        return int(text)
    scheme = urllib.parse.urlsplit(text).scheme.lower()
    return text if scheme in STREAM_SCHEMES and "://" in text else None


def is_stream(source: str | int | Path) -> bool:
    """Whether ``source`` is a webcam index or a stream URL (see ``stream_target``)."""
    return stream_target(source) is not None


def _stream_name(target: int | str) -> str:
    """A file-name-safe name for a webcam or stream (no dots, so ``Path.stem`` keeps all of it)."""
    if isinstance(target, int):
        return f"webcam{target}"
    parts = urllib.parse.urlsplit(target)
    # Credentials in a URL never reach a file name or a log line.
    label = f"{parts.scheme}_{parts.hostname or ''}_{parts.path}"
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_") or "stream"


def _redacted(target: int | str) -> str:
    if isinstance(target, int):
        return f"webcam {target}"
    parts = urllib.parse.urlsplit(target)
    if parts.password is None:
        return target
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def resolve_source(source: str | Path) -> tuple[list[Path], bool]:
    """The files a source names and whether they are videos.

    Raises:
        FileNotFoundError: nothing matches, naming the source.
    """
    text = str(source)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    elif path.is_file():
        files = [path]
    elif any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    else:
        raise FileNotFoundError(f"prediction source {text!r}: no such file, folder or glob match")
    if not files:
        raise FileNotFoundError(f"prediction source {text!r}: no images or videos found")
    videos = [p.suffix.lower() in VIDEO_SUFFIXES for p in files]
    return files, any(videos)


def count_frames(source: str | int | Path) -> int | None:
    """How many pictures ``iter_frames(source)`` will give at most, for a progress bar's total.

    Images count one each and videos their reported frame count; ``None`` for a webcam or stream,
    or a video that reports no count. Files that turn out unreadable are skipped later, so the
    count can be higher than what is read.

    Raises:
        FileNotFoundError: A file source that names nothing (checked before any model is loaded).
    """
    if is_stream(source):
        return None
    files, has_videos = resolve_source(source)
    if not has_videos:
        return len(files)
    total = 0
    for path in files:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            total += 1
            continue
        capture = cv2.VideoCapture(str(path))
        opened = capture.isOpened()
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if opened else 0
        capture.release()
        if opened and frames <= 0:
            return None  # a container without a frame count: no total rather than a wrong one
        total += frames  # a video that does not open is skipped when read: it adds nothing
    return total


def _capture_frames(capture: cv2.VideoCapture, path: Path) -> Iterator[Frame]:
    """Every frame of an opened capture, until it ends; releases it."""
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or None
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield Frame(path, frame, index, fps)
            index += 1
    finally:
        capture.release()


def _skip(skipped: Skipped | None, source: str, reason: str) -> None:
    logger.warning("skipped %s: %s", source, reason)
    if skipped is not None:
        skipped.append((source, reason))


def iter_frames(source: str | int | Path, skipped: Skipped | None = None) -> Iterator[Frame]:
    """Yield every picture of ``source`` in order, one at a time.

    Args:
        source: An image or video file, a folder of them, a glob pattern, a webcam index (``0``
            or ``"0"``) or a stream URL (``rtsp://``, ``rtsps://``, ``rtmp://``, ``http(s)://``,
            ``file://``). Videos and streams give one frame per picture they deliver.
        skipped: Where to record ``(file, reason)`` for each file that could not be read: a
            missing, empty, undecodable or truncated image, a video that does not open. Each is
            also logged as a warning, and reading goes on with the next file, also when the
            source names that single file.

    Raises:
        FileNotFoundError: A file source that names nothing (no such file, folder or glob match).
        OSError: A webcam or stream that cannot be opened, or that opens but delivers no frame.
    """
    target = stream_target(source)
    if target is not None:
        yield from _stream_frames(target)
        return
    files, _ = resolve_source(source)
    for path in files:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            if not capture.isOpened():
                capture.release()
                _skip(skipped, str(path), "cannot open video")
                continue
            yield from _capture_frames(capture, path)
            continue
        try:
            image = load_image(path)
        except (OSError, cv2.error) as error:  # ImageReadError, or the decoder giving up
            reason = str(error)
            prefix = f"{path}: "
            _skip(skipped, str(path), reason[len(prefix):] if reason.startswith(prefix) else reason)
            continue
        yield Frame(path, image)


def _stream_frames(target: int | str) -> Iterator[Frame]:
    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        capture.release()
        kind = "webcam" if isinstance(target, int) else "stream"
        raise OSError(f"prediction source {_redacted(target)!r}: cannot open the {kind} (OpenCV VideoCapture)")
    delivered = False
    for frame in _capture_frames(capture, Path(_stream_name(target))):
        delivered = True
        yield frame
    if not delivered:
        raise OSError(f"prediction source {_redacted(target)!r}: opened but delivered no frame")

