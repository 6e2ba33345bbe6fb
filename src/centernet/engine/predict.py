"""Prediction on images, folders, globs and videos: a thin caller of ``models.predictor.Predictor``.

``predict`` yields ``Results`` lazily (a video is never held in memory); ``predict_to_folder`` is
``centernet predict``: it writes each image's results as soon as they are made (JSON lines, flushed
per image, so an interrupted or failed run keeps what it finished, and ``results.json`` holds
every row done, also then), drawn images or videos, and a summary. Each run writes into a folder
of its own (``engine.outputs``: ``runs/predict``, ``runs/predict2``...), every write is checked,
and a failed one stops the run with an ``OutputWriteError`` naming the file and the reason.
"""
from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from centernet.config import Config
from centernet.data.kitti import read_calib
from centernet.data.results import Results
from centernet.engine.outputs import (
    OutputNames,
    OutputWriteError,
    VideoOutput,
    check_output_folder,
    folder_overrides,
    run_output_folder,
    write_image,
    write_record,
    write_text,
)
from centernet.engine.sources import count_frames, is_stream, iter_frames, resolve_source
from centernet.models.predictor import Predictor


def _detector(weights):
    from centernet.models.detector import CenterNet

    return weights if isinstance(weights, CenterNet) else CenterNet.from_checkpoint(weights)


def read_calibration(calib: str | Path | np.ndarray | None, image_path: Path | None = None) -> np.ndarray | None:
    """A ``[3, 4]`` camera matrix from an array, a KITTI calib file, or a folder of ``<frame>.txt`` files."""
    if calib is None or isinstance(calib, np.ndarray):
        return None if calib is None else np.asarray(calib, np.float32).reshape(3, 4)
    path = Path(calib)
    if path.is_dir():
        if image_path is None:
            raise ValueError(f"calibration folder {path} needs an image name to pick a file")
        path = path / f"{image_path.stem}.txt"
    return read_calib(path)


def predictor_for(weights, recipe: str | Path | Config | None = None, overrides: Sequence[str] = (), batch_size: int = 8) -> Predictor:
    """The ``Predictor`` of a checkpoint with an experiment's ``data.*`` input and ``test.*`` options.

    The experiment is ``engine.evaluate.experiment_for``'s (a recipe, or the checkpoint's own), so
    ``predict`` and ``val`` read the same options the same way.
    """
    return _predictor_and_experiment(weights, recipe, overrides, batch_size)[0]


def _predictor_and_experiment(weights, recipe, overrides: Sequence[str], batch_size: int) -> tuple[Predictor, Config]:
    from centernet.engine.evaluate import detector_spec, experiment_for

    detector = _detector(weights)
    cfg = experiment_for(detector, weights, recipe, overrides)
    predictor = Predictor.from_config(
        detector.network, detector.task, detector_spec(detector, cfg), detector.class_names, detector.category_ids, cfg.test,
        batch_size=batch_size,
    )
    return predictor, cfg


def _test_overrides(flip: bool | None, scales: Sequence[float] | None) -> list[str]:
    out = []
    if flip is not None:
        out.append(f"test.flip={str(bool(flip)).lower()}")
    if scales is not None:
        out.append(f"test.scales=[{', '.join(str(float(s)) for s in scales)}]")
    return out


def predict(
    weights,
    source: str | Path,
    *overrides: str,
    batch_size: int = 8,
    calib=None,
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    recipe: str | Path | Config | None = None,
    skipped: list | None = None,
) -> Iterator[Results]:
    """Python API: yield ``Results`` for every image / video frame of ``source``, lazily.

    ``overrides`` are ``test.*`` / ``data.*`` settings (``"test.K=50"``); ``flip`` and ``scales``
    are shorthands for ``test.flip`` and ``test.scales``.
    """
    if isinstance(weights, Predictor):
        predictor = weights
    else:
        predictor = predictor_for(weights, recipe, [*overrides, *_test_overrides(flip, scales)], batch_size)
    for _, result in predictor.stream(iter_frames(source, skipped=skipped), lambda frame: read_calibration(calib, frame.path)):
        yield result


@dataclass
class PredictSummary:
    """What ``predict_to_folder`` wrote: its folder, images / frames done, detections, files skipped.

    ``detections`` counts every result row (after ``test.score_thresh``); ``passed`` those scoring at
    least ``score_thresh`` (``--conf``), which are the ones drawn and written as txt labels, so a run
    where none passed says so instead of leaving empty pictures without a word.
    """

    output: Path
    score_thresh: float = 0.3
    images: int = 0
    detections: int = 0
    passed: int = 0
    max_score: float | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    drawn: int = 0  # drawings written: images, and frames written into videos
    labels: int = 0  # txt label files written (--save-txt)

    def add(self, result: Results) -> None:
        """Count one image's or frame's results."""
        scores = np.asarray(result.scores, dtype=np.float64)
        self.images += 1
        self.detections += len(scores)
        self.passed += int((scores >= self.score_thresh).sum())
        if len(scores):
            self.max_score = max(self.max_score or 0.0, float(scores.max()))

    def __str__(self) -> str:
        lines = [
            f"{self.images} images/frames, {self.detections} detections, {self.passed} at or above --conf "
            + f"{self.score_thresh:g} (drawn, and in --save-txt labels), {len(self.skipped)} files skipped; "
            + f"{self.drawn} drawn" + (f", {self.labels} label files" if self.labels else "") + f"; results in {self.output}"
        ]
        if self.images and self.passed == 0:
            lines.append(self._none_passed())
        return "\n".join([*lines, *(f"skipped {path}: {reason}" for path, reason in self.skipped)])

    def _none_passed(self) -> str:
        if self.max_score is None:
            return "no detections at all: the network found nothing (or test.score_thresh / --score-thresh removed everything)"
        suggestion = math.floor(self.max_score * 100) / 100
        hint = f"; lower it, e.g. --conf {suggestion:g}" if suggestion > 0 else "; the network is not confident about anything here"
        return (
            f"no detection reached --conf {self.score_thresh:g} (highest score {self.max_score:.3f}), "
            f"so nothing is drawn or written to txt labels{hint}"
        )


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (what ``mkdir(parents=True)`` creates)."""
    missing = None
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            break
        missing = candidate
    return missing


def predict_to_folder(
    weights,
    source: str | Path,
    output: str | Path | None = None,
    score_thresh: float = 0.3,
    batch_size: int = 8,
    save_txt: bool = False,
    calib=None,
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    recipe: str | Path | Config | None = None,
    overrides: Sequence[str] = (),
    on_folder=None,
) -> PredictSummary:
    """``centernet predict``: drawn images (or an annotated video) and result files, written as made.

    The run's folder (``engine.outputs.run_output_folder``): ``output``, or ``project=`` /
    ``name=`` among ``overrides``, or else the first free ``runs/predict``, ``runs/predict2``...
    A chosen folder that holds an earlier run is refused (``on_existing_run=increment`` /
    ``overwrite`` say otherwise); ``args.yaml`` there records the command and the resolved
    options. ``on_folder(path)`` is called once the folder is made.

    ``results.jsonl``: one line per image or frame, flushed at once: ``{"image_id", "file",
    "frame", "detections", "outputs"}`` with ``detections`` in the COCO results format of the task
    (``image_id`` = position in the source, 0-based; ``category_id`` = the checkpoint's category
    ids), each row also naming its ``file_name`` (and a video's ``frame``), and ``outputs`` the
    files written for it. ``results.json`` holds all rows done as one list, written at the end and
    on any failure. Output names are the source-relative paths (``a/x.jpg``), a suffix added where
    two would meet (``engine.outputs.OutputNames``). 3D models also write KITTI result files under
    ``kitti/``; ``save_txt`` writes YOLO txt labels under ``labels/``. ``score_thresh`` applies to
    drawing and the txt labels (``test.score_thresh`` to the detections themselves); the summary
    counts what passed it and what was written.

    The source is checked before the model loads, a chosen folder that is taken before it too, and
    a folder this call created is removed again when it fails before finishing one image.

    Raises:
        OutputWriteError: A result file could not be written; the message names it, the reason,
            and where the results done before are.
    """
    total = count_frames(source)  # a missing source fails here, before the checkpoint is read
    chosen, overrides = folder_overrides(overrides)
    project, name, on_existing = chosen.get("project", "runs"), chosen.get("name"), chosen.get("on_existing_run", "error")
    if output is not None or name is not None:
        check_output_folder(Path(output) if output is not None else Path(project) / name, on_existing)
    predictor, cfg = _predictor_and_experiment(weights, recipe, [*overrides, *_test_overrides(flip, scales)], batch_size)
    target = Path(output) if output is not None else Path(project) / (name or "predict")
    created = _first_missing(target)
    output, lock = run_output_folder("predict", output, project, name, on_existing)
    if output != target:  # a numbered folder is always new
        created = output
    summary = PredictSummary(output, float(score_thresh))
    if on_folder is not None:
        on_folder(output)
    try:
        write_record(output, {
            "verb": "predict", "weights": str(weights) if isinstance(weights, (str, Path)) else type(weights).__name__,
            "source": str(source), "output": str(output), "conf": float(score_thresh), "batch_size": batch_size,
            "save_txt": bool(save_txt), "calib": None if calib is None or isinstance(calib, np.ndarray) else str(calib),
            "overrides": list(overrides), "data": cfg.to_dict()["data"], "test": cfg.to_dict()["test"],
        })
        _predict_into(predictor, iter_frames(source, skipped=summary.skipped), total, calib, save_txt, summary, _progress_unit(source))
    except BaseException as error:
        lock.release()
        if created is not None and summary.images == 0:  # nothing done: no folder left behind
            shutil.rmtree(created, ignore_errors=True)
            if on_folder is not None:
                on_folder(None)
        elif isinstance(error, OutputWriteError):
            raise OutputWriteError(
                f"{error}; the detections of the {summary.images} images/frames done are kept in {output} (results.jsonl, results.json)"
            ) from error
        raise
    lock.release()
    return summary


def _progress_unit(source) -> str:
    """What the progress bar counts: ``frame`` where a video, webcam or stream is read, else ``image``."""
    return "frame" if is_stream(source) or resolve_source(source)[1] else "image"


def _predict_into(predictor: Predictor, frames, total: int | None, calib, save_txt: bool, summary: PredictSummary, unit: str = "image") -> None:
    """The loop of ``predict_to_folder``: results files, drawn outputs and the summary's counts.

    Whatever ends it (a failed write, an error, Ctrl-C), ``results.json`` is written with every row
    done and every video is closed; a failure to write them is raised only when nothing else failed.
    """
    output = summary.output
    videos: dict[Path, VideoOutput] = {}
    names = OutputNames()
    rows: list[dict] = []
    results = predictor.stream(frames, lambda f: read_calibration(calib, f.path))
    jsonl = output / "results.jsonl"
    failed = True
    try:
        try:
            lines = open(jsonl, "w")  # noqa: SIM115  (closed in the finally below)
        except OSError as error:
            raise OutputWriteError(f"cannot write {jsonl}: {error.strerror or error}") from error
        with lines:
            for frame, result in tqdm(results, total=total, desc="predict", unit=unit):
                file_name = str(frame.relative or frame.path.name)  # source-relative: a/x.jpg and b/x.jpg stay apart
                where = {"file_name": file_name} if frame.frame_index is None else {"file_name": file_name, "frame": frame.frame_index}
                image_rows = [
                    {"image_id": row["image_id"], **where, **row}
                    for row in predictor.task.coco_rows(result, summary.images, predictor.category_ids)
                ]
                paths = _output_paths(frame, result, names.stem(frame.path, frame.relative), save_txt)
                outputs = [str(path) for path in paths.values()]
                line = {"image_id": summary.images, "file": str(frame.path), "frame": frame.frame_index, "detections": image_rows, "outputs": outputs}
                try:  # the detections first: a drawing that fails to write does not take them with it
                    lines.write(json.dumps(line) + "\n")
                    lines.flush()
                except OSError as error:
                    raise OutputWriteError(f"cannot write {jsonl}: {error.strerror or error}") from error
                rows += image_rows
                summary.add(result)
                _write_outputs(frame, result, output, summary, paths, videos)
        failed = False
    finally:
        _finish(videos, rows, output, failed)


def _finish(videos: dict, rows: list[dict], output: Path, failed: bool) -> None:
    """Closes the videos and writes ``results.json``; their errors are raised only when nothing else failed."""
    errors = []
    for video in videos.values():
        try:
            video.close()
        except OutputWriteError as error:
            errors.append(error)
    try:
        write_text(output / "results.json", json.dumps(rows))
    except OutputWriteError as error:
        errors.append(error)
    if errors and not failed:
        raise errors[0]


def _output_paths(frame, result: Results, stem: Path, save_txt: bool) -> dict[str, Path]:
    """The files written for one frame, relative to the run folder, by kind (``drawn``, ``labels``, ``kitti``, ``bev``)."""
    if frame.frame_index is None:
        paths = {"drawn": stem.with_name(stem.name + (frame.path.suffix.lower() or ".jpg"))}
    else:
        paths = {"drawn": stem.with_name(f"{stem.name}.mp4")}
        stem = stem.with_name(f"{stem.name}_{frame.frame_index:06d}")
    if save_txt:
        paths["labels"] = Path("labels") / stem.with_name(f"{stem.name}.txt")
    if result.boxes_3d is not None:
        paths["kitti"] = Path("kitti") / stem.with_name(f"{stem.name}.txt")
        paths["bev"] = stem.with_name(f"{stem.name}_bev.png")
    return paths


def _write_outputs(frame, result: Results, output: Path, summary: PredictSummary, paths: dict[str, Path], videos: dict) -> None:
    """Writes the drawn image (or video frame), YOLO labels and KITTI lines of one frame, each checked and counted."""
    score_thresh = summary.score_thresh
    drawn = result.plot(score_thresh)
    if frame.frame_index is None:
        write_image(output / paths["drawn"], drawn)
    else:
        if frame.path not in videos:
            # The frame itself gives the size, the source its rate: a webcam or stream has no file to ask.
            h, w = drawn.shape[:2]
            videos[frame.path] = VideoOutput(output / paths["drawn"], frame.fps or 25.0, (w, h))
        videos[frame.path].write(drawn)
    summary.drawn += 1
    if "labels" in paths:
        h, w = frame.image.shape[:2]
        write_text(output / paths["labels"], result.filter(score_thresh).to_yolo(w, h))
        summary.labels += 1
    if "kitti" in paths:
        write_text(output / paths["kitti"], result.to_kitti())
        write_image(output / paths["bev"], result.plot_birds_eye_view(score_thresh))
