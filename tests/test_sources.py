"""Prediction sources: files, folders, videos, streams and webcams, read lazily; bad files are skipped and counted."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from centernet.data import image_io
from centernet.engine import sources
from centernet.engine.sources import is_stream, iter_frames, stream_target


def _write_image(path: Path, value: int, size=(24, 32)) -> Path:
    assert cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))
    return path


def _write_video(path: Path, values: list[int], fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (32, 24))
    assert writer.isOpened()
    for value in values:
        writer.write(np.full((24, 32, 3), value, np.uint8))
    writer.release()
    return path


def _broken_folder(folder: Path) -> dict[str, str]:
    """Good images around every kind of bad one; returns bad file name -> expected reason fragment."""
    folder.mkdir()
    _write_image(folder / "a_good.png", 10)
    (folder / "b_empty.jpg").write_bytes(b"")
    (folder / "c_text.jpg").write_text("this is not an image\n")
    jpeg = cv2.imencode(".jpg", np.full((24, 32, 3), 90, np.uint8))[1].tobytes()
    (folder / "d_truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    _write_image(folder / "e_good.jpg", 200)
    (folder / "f_video.avi").write_bytes(b"RIFF garbage")
    return {
        "b_empty.jpg": "0 bytes",
        "c_text.jpg": "not a decodable image",
        "d_truncated.jpg": "truncated JPEG",
        "f_video.avi": "cannot open video",
    }


def test_a_folder_with_bad_files_keeps_going_and_records_each(tmp_path: Path, caplog) -> None:
    expected = _broken_folder(tmp_path / "images")
    skipped: list[tuple[str, str]] = []
    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        frames = list(iter_frames(tmp_path / "images", skipped))
    assert [f.path.name for f in frames] == ["a_good.png", "e_good.jpg"]
    assert [int(f.image.mean()) for f in frames] == [10, 200]
    assert [Path(path).name for path, _ in skipped] == list(expected)
    for (path, reason), fragment in zip(skipped, expected.values()):
        assert fragment in reason, (path, reason)
    # The caller that collects them reports each once (predict's summary); nothing is logged twice.
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_without_a_list_bad_files_are_still_skipped_and_logged(tmp_path: Path, caplog) -> None:
    _broken_folder(tmp_path / "images")
    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        assert len(list(iter_frames(str(tmp_path / "images")))) == 2
    assert sum("c_text.jpg" in r.getMessage() for r in caplog.records) == 1


def test_a_single_bad_file_is_skipped_and_counted(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    skipped: list[tuple[str, str]] = []
    assert list(iter_frames(bad, skipped)) == []
    assert skipped == [(str(bad), f"not a decodable image ({bad.stat().st_size} bytes)")]


def test_a_file_that_vanishes_after_listing_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    first, second = _write_image(folder / "1.png", 50), _write_image(folder / "2.png", 60)
    skipped: list[tuple[str, str]] = []
    frames = iter_frames(folder, skipped)
    assert next(frames).path == first  # the listing is made; now the second file goes away
    second.unlink()
    assert list(frames) == []
    assert skipped == [(str(second), "image file not found")]


def test_a_decoder_error_is_skipped_too(tmp_path: Path, monkeypatch) -> None:
    image = _write_image(tmp_path / "huge.png", 1)

    def refuse(data, flags):
        raise cv2.error("OpenCV(5.0.0) imdecode_: image is too big")

    monkeypatch.setattr(image_io.cv2, "imdecode", refuse)  # the decoder itself giving up
    skipped: list[tuple[str, str]] = []
    assert list(iter_frames(image, skipped)) == []
    assert [path for path, _ in skipped] == [str(image)]
    assert "not a decodable image" in skipped[0][1] and "imdecode_: image is too big" in skipped[0][1]


def test_frames_are_read_lazily(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        _write_image(folder / f"{i}.png", 20 * i)
    loaded = []
    real_load = sources.load_image
    monkeypatch.setattr(sources, "load_image", lambda path: loaded.append(Path(path).name) or real_load(path))
    frames = iter_frames(folder)
    assert loaded == []
    next(frames)
    assert loaded == ["0.png"]
    next(frames)
    assert loaded == ["0.png", "1.png"]


def test_a_missing_source_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        next(iter_frames(tmp_path / "nowhere"))


def test_video_file_gives_indexed_frames_with_fps(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "clip.avi", [30, 120, 220], fps=12.0)
    frames = list(iter_frames(video))
    assert [f.frame_index for f in frames] == [0, 1, 2]
    assert {f.relative for f in frames} == {Path("clip.avi")}  # what predict names its outputs by
    np.testing.assert_allclose([f.image.mean() for f in frames], [30, 120, 220], atol=3)
    assert frames[0].fps == pytest.approx(12.0)


def test_a_stream_url_is_read_through_opencv(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "clip.avi", [40, 160])
    url = video.as_uri()  # file:///...: OpenCV's FFmpeg reader, the code path of rtsp:// and http://
    assert is_stream(url) and stream_target(url) == url
    frames = list(iter_frames(url))
    assert [f.frame_index for f in frames] == [0, 1]
    np.testing.assert_allclose([f.image.mean() for f in frames], [40, 160], atol=3)
    assert "." not in frames[0].path.name  # a name with no dots: its stem is all of it, for the output video
    assert frames[0].path.name.endswith("clip_avi")


def test_a_stream_that_cannot_be_opened_is_an_error_naming_it(tmp_path: Path) -> None:
    url = (tmp_path / "offline.avi").as_uri()
    with pytest.raises(OSError, match=r"offline\.avi.*cannot open the stream"):
        next(iter_frames(url))


def test_stream_credentials_stay_out_of_errors_and_names(monkeypatch) -> None:
    monkeypatch.setattr(sources.cv2, "VideoCapture", _FakeCamera.factory([]))
    with pytest.raises(OSError) as error:
        next(iter_frames("rtsp://admin:secret@camera.local:554/live"))
    assert "secret" not in str(error.value) and "camera.local:554/live" in str(error.value)
    assert sources._stream_name("rtsp://admin:secret@camera.local:554/live") == "rtsp_camera_local_live"


@pytest.mark.parametrize(
    "source, target",
    [
        (0, 0),
        ("1", 1),
        (" 2 ", 2),
        ("rtsp://cam/live", "rtsp://cam/live"),
        ("rtsps://cam/live", "rtsps://cam/live"),
        ("RTSP://cam/live", "RTSP://cam/live"),
        ("http://cam:8080/video.mjpg", "http://cam:8080/video.mjpg"),
        ("https://cam/stream", "https://cam/stream"),
        ("images/", None),
        ("photo.jpg", None),
        ("ftp://host/x.mp4", None),
        (True, None),
    ],
)
def test_which_sources_are_streams(source, target) -> None:
    assert stream_target(source) == target
    assert is_stream(source) == (target is not None)


def test_a_digit_string_naming_an_existing_folder_is_that_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "0").mkdir()
    _write_image(tmp_path / "0" / "x.png", 70)
    assert stream_target("0") is None
    assert [f.path for f in iter_frames("0")] == [Path("0") / "x.png"]


class _FakeCamera:
    """Stands in for ``cv2.VideoCapture`` on a webcam (no camera on the test machine)."""

    opened: list = []

    def __init__(self, target, pictures: list[np.ndarray], opens: bool) -> None:
        self.target, self.pictures, self.opens, self.released = target, list(pictures), opens, False
        _FakeCamera.opened.append(self)

    @classmethod
    def factory(cls, pictures: list[np.ndarray], opens: bool | None = None):
        """A ``VideoCapture`` stand-in delivering ``pictures``; it opens when there are any, or as told."""
        cls.opened = []
        return lambda target: cls(target, pictures, bool(pictures) if opens is None else opens)

    def isOpened(self) -> bool:
        return self.opens

    def read(self):
        return (True, self.pictures.pop(0)) if self.pictures else (False, None)

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        self.released = True


def test_a_webcam_index_opens_that_camera_and_yields_its_frames(monkeypatch) -> None:
    pictures = [np.full((8, 8, 3), v, np.uint8) for v in (5, 6, 7)]
    monkeypatch.setattr(sources.cv2, "VideoCapture", _FakeCamera.factory(pictures))
    frames = iter_frames("0")
    first = next(frames)
    camera = _FakeCamera.opened[0]
    assert camera.target == 0 and len(camera.pictures) == 2  # read one picture at a time
    rest = list(frames)
    assert [int(f.image[0, 0, 0]) for f in [first, *rest]] == [5, 6, 7]
    assert [(f.path, f.frame_index) for f in [first, *rest]] == [(Path("webcam0"), 0), (Path("webcam0"), 1), (Path("webcam0"), 2)]
    assert first.fps == 30.0 and camera.released


def test_a_webcam_that_cannot_be_opened_is_an_error_naming_it(monkeypatch) -> None:
    monkeypatch.setattr(sources.cv2, "VideoCapture", _FakeCamera.factory([]))
    with pytest.raises(OSError, match=r"'webcam 3': cannot open the webcam"):
        next(iter_frames(3))


def test_a_stream_that_opens_but_delivers_nothing_is_an_error(monkeypatch) -> None:
    monkeypatch.setattr(sources.cv2, "VideoCapture", _FakeCamera.factory([], opens=True))
    with pytest.raises(OSError, match="opened but delivered no frame"):
        next(iter_frames("rtsp://cam/live"))
    assert _FakeCamera.opened[0].released
