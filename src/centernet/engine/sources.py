"""Prediction inputs: an image, a folder, a glob pattern or a video, read as BGR frames."""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg"}


@dataclass
class Frame:
    """One input picture: where it came from, its pixels (BGR uint8) and, for video, its index."""

    path: Path
    image: np.ndarray
    frame_index: int | None = None

    @property
    def name(self) -> str:
        if self.frame_index is None:
            return self.path.name
        return f"{self.path.stem}_{self.frame_index:06d}.jpg"


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


def iter_frames(source: str | Path, skipped: list[tuple[Path, str]] | None = None) -> Iterator[Frame]:
    """Yield every picture of ``source`` in order: images as they are, videos frame by frame.

    With a ``skipped`` list, an unreadable image is appended to it as ``(path, reason)`` and passed
    over; without one it raises.
    """
    from centernet.data.image_io import load_image

    files, _ = resolve_source(source)
    for path in files:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            if not capture.isOpened():
                raise OSError(f"{path}: cannot open video")
            index = 0
            try:
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    yield Frame(path, frame, index)
                    index += 1
            finally:
                capture.release()
        else:
            try:
                image = load_image(path)
            except (OSError, ValueError) as error:
                if skipped is None:
                    raise
                skipped.append((path, str(error)))
                continue
            yield Frame(path, image)


def video_properties(path: Path) -> tuple[float, int, int]:
    """Frames per second, width and height of a video file."""
    capture = cv2.VideoCapture(str(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        return float(fps), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()
