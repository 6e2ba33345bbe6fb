"""Prediction inputs, read lazily as BGR frames: an image, a folder, a glob, a video, a webcam or a stream.

Files are read one at a time, so a folder of any size or a long video never sits in memory. A file
that cannot be read (missing, empty, not an image, truncated, a video that does not open) is
skipped and recorded, so one damaged file does not stop a run. Folders and globs are walked by
``data.files`` (each file once, no link followed into a folder already walked, so never a loop);
the links not followed are recorded the same way. Images are decoded from their bytes
(``data.image_io.load_image``) and videos opened through a link of a plain name where their own is
not valid UTF-8, so no file name reaches OpenCV's path functions, which crash on such names. A
webcam or a network stream that cannot be opened is an error: there is nothing else to read.
"""
from __future__ import annotations

import logging
import os
import tempfile
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from centernet.data.files import Walk, glob_files, glob_root, has_magic, walk_files
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
    ``rtsp_camera_local_live``), a usable output file name. ``fps`` is the
    frame rate a video or stream reports (``None`` for images, and where it reports none).
    ``relative`` is the file's path relative to the folder or glob it came from (``a/x.jpg``), from
    which ``predict`` names its outputs, so ``a/x.jpg`` and ``b/x.jpg`` never write the same file.
    """

    path: Path
    image: np.ndarray
    frame_index: int | None = None
    fps: float | None = None
    relative: Path | None = None


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


@dataclass
class SourceFiles:
    """The files a source names (sorted), the folder their output names are relative to, and
    ``(path, reason)`` of the links its walk did not follow."""

    files: list[Path]
    base: Path
    not_followed: list[tuple[Path, str]]

    @property
    def has_videos(self) -> bool:
        return any(p.suffix.lower() in VIDEO_SUFFIXES for p in self.files)

    def relative(self, path: Path) -> Path:
        try:
            return path.relative_to(self.base)
        except ValueError:
            return Path(path.name)


def source_files(source: str | Path) -> SourceFiles:
    """The files a file, folder (not recursive) or glob source names, walked safely (``data.files``).

    Raises:
        FileNotFoundError: nothing matches, naming the source.
    """
    text = str(source)
    path = Path(text)
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    if path.is_dir():
        walk, base = walk_files(path, suffixes), path
    elif path.is_file():
        walk, base = Walk([path]), path.parent
    elif has_magic(text):
        walk, base = glob_files(text, suffixes), glob_root(text)[0]
    else:
        raise FileNotFoundError(f"prediction source {text!r}: no such file, folder or glob match")
    if not walk.files:
        followed = f" ({len(walk.not_followed)} links not followed, e.g. {walk.not_followed[0][0]}: {walk.not_followed[0][1]})" if walk.not_followed else ""
        raise FileNotFoundError(f"prediction source {text!r}: no images or videos found{followed}")
    return SourceFiles(walk.files, base, walk.not_followed)


def resolve_source(source: str | Path) -> tuple[list[Path], bool]:
    """The files a source names and whether they are videos (``source_files``).

    Raises:
        FileNotFoundError: nothing matches, naming the source.
    """
    found = source_files(source)
    return found.files, found.has_videos


def open_video(path: Path) -> cv2.VideoCapture:
    """``cv2.VideoCapture`` of a video file, whatever its name.

    OpenCV takes a path as UTF-8 and crashes on a name that is not valid UTF-8; such a file is
    opened through a link of a plain name in a temporary folder (removed once the file is open).
    """
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        with tempfile.TemporaryDirectory(prefix="centernet_video_") as folder:
            link = Path(folder) / f"video{path.suffix.encode('ascii', 'ignore').decode()}"
            link.symlink_to(path.absolute())
            return cv2.VideoCapture(str(link))
    return cv2.VideoCapture(str(path))


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
        capture = open_video(path)
        opened = capture.isOpened()
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if opened else 0
        capture.release()
        if opened and frames <= 0:
            return None  # a container without a frame count: no total rather than a wrong one
        total += frames  # a video that does not open is skipped when read: it adds nothing
    return total


def _capture_frames(capture: cv2.VideoCapture, path: Path, relative: Path | None = None) -> Iterator[Frame]:
    """Every frame of an opened capture, until it ends; releases it."""
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or None
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield Frame(path, frame, index, fps, relative)
            index += 1
    finally:
        capture.release()


def _skip(skipped: Skipped | None, source: str, reason: str) -> None:
    """Records a skipped input; logged only where no caller collects them (a caller reports its list once)."""
    if skipped is None:
        logger.warning("skipped %s: %s", source, reason)
    else:
        skipped.append((source, reason))


def iter_frames(source: str | int | Path, skipped: Skipped | None = None) -> Iterator[Frame]:
    """Yield every picture of ``source`` in order, one at a time.

    Args:
        source: An image or video file, a folder of them, a glob pattern, a webcam index (``0``
            or ``"0"``) or a stream URL (``rtsp://``, ``rtsps://``, ``rtmp://``, ``http(s)://``,
            ``file://``). Videos and streams give one frame per picture they deliver.
        skipped: Where to record ``(file, reason)`` for each file that could not be read: a
            missing, empty, undecodable or truncated image, a video that does not open, a link
            the walk did not follow. Without it each is logged as a warning. Reading goes on
            with the next file, also when the source names that single file.

    Raises:
        FileNotFoundError: A file source that names nothing (no such file, folder or glob match).
        OSError: A webcam or stream that cannot be opened, or that opens but delivers no frame.
    """
    target = stream_target(source)
    if target is not None:
        yield from _stream_frames(target)
        return
    found = source_files(source)
    for path, reason in found.not_followed:
        _skip(skipped, str(path), reason)
    for path in found.files:
        relative = found.relative(path)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            capture = open_video(path)
            if not capture.isOpened():
                capture.release()
                _skip(skipped, str(path), "cannot open video")
                continue
            yield from _capture_frames(capture, path, relative)
            continue
        try:
            image = load_image(path)
        except OSError as error:  # ImageReadError: the message starts with the file name
            reason = str(error)
            prefix = f"{path}: "
            _skip(skipped, str(path), reason[len(prefix):] if reason.startswith(prefix) else reason)
            continue
        yield Frame(path, image, relative=relative)


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

