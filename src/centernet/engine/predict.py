"""Prediction on images, folders, globs and videos: a thin caller of ``models.predictor.Predictor``.

``predict`` yields ``Results`` lazily (a video is never held in memory); ``predict_to_folder`` is
``centernet predict``: it writes each image's results as soon as they are made (JSON lines, flushed
per image, so an interrupted run keeps what it finished), drawn images or videos, and a summary.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from centernet.config import Config
from centernet.data.kitti import read_calib, write_kitti_results
from centernet.data.results import Results
from centernet.engine.sources import count_frames, iter_frames
from centernet.models.predictor import Predictor

log = logging.getLogger(__name__)


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
    from centernet.engine.evaluate import detector_spec, experiment_for

    detector = _detector(weights)
    cfg = experiment_for(detector, weights, recipe, overrides)
    return Predictor.from_config(
        detector.network, detector.task, detector_spec(detector, cfg), detector.class_names, detector.category_ids, cfg.test,
        batch_size=batch_size,
    )


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
            + f"{self.score_thresh:g} (drawn, and in --save-txt labels), {len(self.skipped)} files skipped; results in {self.output}"
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
    output: str | Path,
    score_thresh: float = 0.3,
    batch_size: int = 8,
    save_txt: bool = False,
    calib=None,
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    recipe: str | Path | Config | None = None,
    overrides: Sequence[str] = (),
) -> PredictSummary:
    """``centernet predict``: drawn images (or an annotated video) and result files, written as made.

    ``results.jsonl``: one line per image or frame, flushed at once: ``{"image_id", "file",
    "frame", "detections"}`` with ``detections`` in the COCO results format of the task (``image_id``
    = position in the source, 0-based; ``category_id`` = the checkpoint's category ids), each row
    also naming its ``file_name`` (and a video's ``frame``). At the end ``results.json`` holds all
    rows as one list. 3D models also write KITTI result files under ``kitti/``; ``save_txt`` writes
    YOLO txt labels under ``labels/``. ``score_thresh`` applies to drawing and the txt labels
    (``test.score_thresh`` to the detections themselves); the summary counts what passed it.

    The source is checked before the model loads, and a folder this call created is removed again
    when it fails before finishing one image.
    """
    total = count_frames(source)  # a missing source fails here, before the checkpoint is read
    predictor = predictor_for(weights, recipe, [*overrides, *_test_overrides(flip, scales)], batch_size)
    output = Path(output)
    created = _first_missing(output)
    output.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary(output, float(score_thresh))
    try:
        _predict_into(predictor, iter_frames(source, skipped=summary.skipped), total, calib, save_txt, summary)
    except BaseException:
        if created is not None and summary.images == 0:
            shutil.rmtree(created, ignore_errors=True)
        raise
    for path, reason in summary.skipped:
        log.warning("skipped %s: %s", path, reason)
    return summary


def _predict_into(predictor: Predictor, frames, total: int | None, calib, save_txt: bool, summary: PredictSummary) -> None:
    """The loop of ``predict_to_folder``: results files, drawn outputs and the summary's counts."""
    output = summary.output
    writers: dict[Path, cv2.VideoWriter] = {}
    rows: list[dict] = []
    results = predictor.stream(frames, lambda f: read_calibration(calib, f.path))
    with open(output / "results.jsonl", "w") as lines:
        try:
            for frame, result in tqdm(results, total=total, desc="predict", unit="image"):
                where = {"file_name": frame.path.name} if frame.frame_index is None else {"file_name": frame.path.name, "frame": frame.frame_index}
                image_rows = [
                    {"image_id": row["image_id"], **where, **row}
                    for row in predictor.task.coco_rows(result, summary.images, predictor.category_ids)
                ]
                lines.write(json.dumps({"image_id": summary.images, "file": str(frame.path), "frame": frame.frame_index, "detections": image_rows}) + "\n")
                lines.flush()
                rows += image_rows
                _write_outputs(frame, result, output, summary.score_thresh, save_txt, writers)
                summary.add(result)
        finally:
            for writer in writers.values():
                writer.release()
    (output / "results.json").write_text(json.dumps(rows))


def _write_outputs(frame, result: Results, output: Path, score_thresh: float, save_txt: bool, writers: dict) -> None:
    """The drawn image (or video frame), YOLO labels and KITTI lines of one frame."""
    drawn = result.plot(score_thresh)
    if frame.frame_index is None:
        cv2.imwrite(str(output / frame.name), drawn)
    else:
        if frame.path not in writers:
            # The frame itself gives the size, the source its rate: a webcam or stream has no file to ask.
            h, w = drawn.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            writers[frame.path] = cv2.VideoWriter(str(output / f"{frame.path.stem}.mp4"), fourcc, frame.fps or 25.0, (w, h))
        writers[frame.path].write(drawn)
    stem = Path(frame.name).stem
    if save_txt:
        (output / "labels").mkdir(exist_ok=True)
        h, w = frame.image.shape[:2]
        (output / "labels" / f"{stem}.txt").write_text(result.filter(score_thresh).to_yolo(w, h))
    if result.boxes_3d is not None:
        write_kitti_results(output / "kitti", {stem: result.kitti_objects()})
        cv2.imwrite(str(output / f"{stem}_bev.png"), result.plot_birds_eye_view(score_thresh))
