"""Where a verb that writes files puts them, and how it writes them: a fresh folder, checked writes.

``run_output_folder`` gives ``predict`` (and ``val`` when it writes files) a folder of its own per
run: ``runs/predict``, ``runs/predict2``, ... by default, or the one ``--output`` / ``name=``
chooses, which must be new or empty (``on_existing_run=increment`` takes ``<name>-2``...,
``overwrite`` empties it first), so an earlier run's files are never half-overwritten. The folder
is locked for the run's life (``run_folder.RunLock``) and records the command and the resolved
options in ``args.yaml``.

``OutputNames`` gives every source file a name unique within a run (its path relative to the
source's folder, a suffix where two would meet: ``y.jpg`` and ``y.png`` label as ``y.txt`` and
``y_png.txt``). ``write_image`` / ``write_text`` check every write (``cv2.imwrite`` only returns
``False``): a failure raises ``OutputWriteError`` naming the file and the reason.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import yaml

from centernet.config import ConfigError
from centernet.engine.command import command_line
from centernet.engine.run_folder import LOCK_NAME, ON_EXISTING_RUN, RunLock, RunLockedError

#: The record of a run's command and resolved options in its folder.
RECORD_NAME = "args.yaml"


class OutputWriteError(OSError):
    """A result file that could not be written; the message names it and the reason."""


def write_bytes(path: Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` (its folder made), or raises ``OutputWriteError`` naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as error:
        try:
            path.unlink(missing_ok=True)  # no half-written file left to be taken for a result
        except OSError:
            pass
        raise OutputWriteError(f"cannot write {path}: {error.strerror or error}") from error
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_image(path: Path, image: np.ndarray) -> Path:
    """Encodes ``image`` by ``path``'s suffix and writes it through Python (any file name), checked."""
    try:
        ok, encoded = cv2.imencode(path.suffix or ".jpg", image)
    except cv2.error as error:
        ok, encoded = False, str(error).strip()
    if not ok:
        raise OutputWriteError(f"cannot write {path}: OpenCV cannot encode a {path.suffix!r} image")
    return write_bytes(path, encoded.tobytes())


class VideoOutput:
    """An annotated video written frame by frame; its file appears under its own name when complete.

    OpenCV's writer takes only UTF-8 names, so it writes a plain temporary name in the same folder
    that ``close`` renames. A writer that does not open, or a file left empty, is an ``OutputWriteError``.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path = path
        self.frames = 0
        self._partial = path.with_name(f".partial_{os.getpid()}_{id(self)}.mp4")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputWriteError(f"cannot write {path}: {error.strerror or error}") from error
        try:
            os.fspath(self._partial).encode("utf-8")
        except UnicodeEncodeError:  # a folder name OpenCV cannot take: write in a temporary folder, then move
            self._partial = Path(tempfile.mkdtemp(prefix="centernet_video_")) / "partial.mp4"
        self._writer = cv2.VideoWriter(str(self._partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._writer.isOpened():
            self._writer.release()
            self._partial.unlink(missing_ok=True)
            raise OutputWriteError(f"cannot write {path}: OpenCV's video writer (mp4v) did not open it")

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        """Finishes the file; raises ``OutputWriteError`` when it holds nothing."""
        self._writer.release()
        try:
            written = self._partial.is_file() and self._partial.stat().st_size > 0
            if written:
                shutil.move(self._partial, self.path)
            else:
                self._partial.unlink(missing_ok=True)
        except OSError as error:
            raise OutputWriteError(f"cannot write {self.path}: {error.strerror or error}") from error
        if not written and self.frames:
            raise OutputWriteError(f"cannot write {self.path}: the video writer left an empty file (disk full?)")


class OutputNames:
    """Output names unique within a run, one per source file (case-insensitively, for any file system).

    The name is the source-relative path without its suffix (``a/x`` for ``a/x.jpg``); a second
    file that would take the same gets its suffix appended (``y_png``), then a number.
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()
        self._given: dict[Path, Path] = {}

    def stem(self, source: Path, relative: Path | None) -> Path:
        """The output stem of ``source`` (the same on every call for one source)."""
        if source in self._given:
            return self._given[source]
        relative = Path(relative or source.name)
        parts = [part for part in relative.parent.parts if part not in ("", ".", "..", "/")]
        base = Path(*parts, relative.stem)
        suffix = relative.suffix.lstrip(".")
        candidates = [base, base.with_name(f"{base.name}_{suffix}")] if suffix else [base]
        number = 2
        while str(candidates[0]).casefold() in self._taken:
            if len(candidates) > 1:
                candidates.pop(0)
            else:
                candidates = [base.with_name(f"{candidates[0].name.rsplit('_', 1)[0] if number > 2 else candidates[0].name}_{number}")]
                number += 1
        self._taken.add(str(candidates[0]).casefold())
        self._given[source] = candidates[0]
        return candidates[0]


def _holds_files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in folder.iterdir() if entry.name != LOCK_NAME)


def check_output_folder(folder: Path, on_existing_run: str = "error") -> None:
    """Refuses, before any work, a chosen folder that holds an earlier run (``on_existing_run="error"``).

    Raises:
        FileExistsError: ``folder`` holds files and ``on_existing_run`` is ``"error"``.
        RunLockedError: A live run holds ``folder``.
        ConfigError: ``on_existing_run`` is not one of ``ON_EXISTING_RUN``.
    """
    if on_existing_run not in ON_EXISTING_RUN:
        raise ConfigError(f"on_existing_run: {on_existing_run!r} is not one of {', '.join(ON_EXISTING_RUN)}")
    if on_existing_run == "increment":
        return  # never refused: a taken folder gives the next free name
    RunLock(folder).ensure_free()
    held = _holds_files(folder)
    if held and on_existing_run == "error":
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise FileExistsError(
            f"output folder {folder} already holds an earlier run's files ({shown}); a run never writes over "
            "another: choose another --output or name=, or on_existing_run=increment for a new numbered "
            "folder, on_existing_run=overwrite to empty it first"
        )


def run_output_folder(verb: str, output: str | Path | None, project: str, name: str | None, on_existing_run: str) -> tuple[Path, RunLock]:
    """Creates and locks the run's folder (see the module docstring); returns it and its lock.

    ``output`` (or ``project/name``) chooses the folder; without either, the first free of
    ``project/verb``, ``project/verb2``, ... is made.
    """
    if output is None and name is None:
        number = 1
        while True:
            folder = Path(project) / (verb if number == 1 else f"{verb}{number}")
            try:
                folder.mkdir(parents=True)
                break
            except FileExistsError:
                number += 1
            except OSError as error:
                raise OutputWriteError(f"cannot create {folder}: {error.strerror or error}") from error
    else:
        folder = Path(output) if output is not None else Path(project) / str(name)
        check_output_folder(folder, on_existing_run)
        if on_existing_run == "increment":
            base, number = folder, 2
            while _holds_files(folder) or _locked(folder):
                folder = base.with_name(f"{base.name}-{number}")
                number += 1
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputWriteError(f"cannot create {folder}: {error.strerror or error}") from error
    lock = RunLock(folder)
    lock.acquire()
    if on_existing_run == "error" and (output is not None or name is not None) and _holds_files(folder):
        lock.release()  # another run wrote there between the check and the lock
        raise FileExistsError(f"output folder {folder} already holds an earlier run's files; choose another --output or name=")
    if on_existing_run == "overwrite" and (output is not None or name is not None):
        for entry in folder.iterdir():
            if entry.name != LOCK_NAME:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return folder, lock


def _locked(folder: Path) -> bool:
    try:
        RunLock(folder).ensure_free()
    except RunLockedError:
        return True
    return False


def write_record(folder: Path, options: dict) -> Path:
    """``args.yaml``: the command and the run's resolved options."""
    record = _printable({"command": command_line(), **options})
    return write_text(folder / RECORD_NAME, yaml.safe_dump(record, sort_keys=False, allow_unicode=True))


def _printable(value):
    """``value`` with every string valid UTF-8 (a file name's undecodable bytes as ``\\xNN``)."""
    if isinstance(value, dict):
        return {str(k): _printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in value]
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return os.fsencode(value).decode("utf-8", "backslashreplace")
    return value


#: Top-level fields that choose a verb's output folder (``project=``, ``name=``, ``on_existing_run=``), not the experiment.
FOLDER_FIELDS = ("project", "name", "on_existing_run")


def folder_overrides(overrides) -> tuple[dict[str, str], list[str]]:
    """``project=`` / ``name=`` / ``on_existing_run=`` apart from the experiment's overrides."""
    chosen, rest = {}, []
    for item in overrides:
        key, equals, value = item.partition("=")
        if equals and key.strip() in FOLDER_FIELDS:
            chosen[key.strip()] = value.strip()
        else:
            rest.append(item)
    return chosen, rest


class ValOutputs:
    """Where ``val`` writes its result files: a fresh ``runs/val``, ``runs/val2``... when ``--save-json``
    or ``--save-kitti`` is given without a path (or ``name=`` chooses the folder), else the paths given.

    Created before any work, so a taken file or folder is refused before the model runs: an
    existing ``--save-json`` file or a ``--save-kitti`` folder holding files needs
    ``on_existing_run=overwrite``.
    """

    def __init__(self, save_json, save_kitti, chosen: dict[str, str]) -> None:
        self.project, self.name = chosen.get("project", "runs"), chosen.get("name")
        self.on_existing = chosen.get("on_existing_run", "error")
        self.in_folder = save_json is True or save_kitti is True
        self.save_json = None if save_json in (None, False, True) else Path(save_json)
        self.save_kitti = None if save_kitti in (None, False, True) else Path(save_kitti)
        self._json_wanted, self._kitti_wanted = save_json is True, save_kitti is True
        if self.in_folder and self.name is not None:
            check_output_folder(Path(self.project) / self.name, self.on_existing)
        if self.save_json is not None and self.save_json.exists() and self.on_existing != "overwrite":
            raise FileExistsError(
                f"--save-json {self.save_json}: the file exists (an earlier run's results); choose another name, give "
                "--save-json without a path for a fresh runs/val folder, or on_existing_run=overwrite to replace it"
            )
        if self.save_kitti is not None:
            check_output_folder(self.save_kitti, self.on_existing)

    def open(self, options: dict) -> None:
        """Makes the run folder (when one is used) with its ``args.yaml``; sets the result paths."""
        if self.save_kitti is not None:
            if self.on_existing == "overwrite" and self.save_kitti.is_dir():
                shutil.rmtree(self.save_kitti)
            self.save_kitti.mkdir(parents=True, exist_ok=True)
        if not self.in_folder:
            return
        folder, lock = run_output_folder("val", None, self.project, self.name, self.on_existing)
        try:
            write_record(folder, {"verb": "val", "output": str(folder), **options})
        finally:
            lock.release()
        self.folder = folder
        if self._json_wanted:
            self.save_json = folder / "results.json"
        if self._kitti_wanted:
            self.save_kitti = folder / "kitti"
