"""Prediction on images, folders, globs and videos: batched, with drawn outputs and result files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from centernet.data.kitti import read_calib
from centernet.engine.evaluate import detect_batch
from centernet.engine.results import Results, results_from_task_output
from centernet.engine.sources import Frame, iter_frames, video_properties


def _detector(weights):
    from centernet.detector import CenterNet

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


def predict_images(
    detector,
    images: Sequence[np.ndarray],
    paths: Sequence[Path | None] | None = None,
    calibs: Sequence[np.ndarray | None] | None = None,
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    nms: bool = False,
) -> list[Results]:
    """Detect on BGR uint8 images ``[H, W, 3]``; one ``Results`` per image in its own pixels.

    One scale without soft-NMS runs as a single batch; several ``scales`` (or ``nms``) run the
    original's multi-scale test per image and merge with Gaussian soft-NMS.
    """
    task = detector.task
    flip = detector.flip_test if flip is None else flip
    paths = list(paths) if paths is not None else [None] * len(images)
    calibs = list(calibs) if calibs is not None else [None] * len(images)
    if task.name == "ddd" and any(c is None for c in calibs):
        missing = [str(p) for p, c in zip(paths, calibs) if c is None]
        raise ValueError(f"3D detection needs each image's camera calibration (--calib); missing for {', '.join(missing[:3])}")
    network = detector.network.eval()
    device = next(network.parameters()).device
    if scales is None or (list(scales) == [1.0] and not nms):
        spec = detector.spec
        prepared = [spec.inference_input(image) for image in images]
        shapes = {p[0].shape for p in prepared}
        if len(shapes) > 1:  # keep-res images of different sizes go one by one
            processed = [detect_batch(network, task, torch.from_numpy(inp)[None].to(device), [meta], detector.K, flip, [calib])[0] for (inp, meta), calib in zip(prepared, calibs)]
        else:
            batch = torch.from_numpy(np.stack([p[0] for p in prepared])).to(device)
            processed = detect_batch(network, task, batch, [p[1] for p in prepared], detector.K, flip, calibs)
    else:
        from centernet.tasks.tta import detect_multi_scale

        if task.name == "ddd":
            raise ValueError("multi-scale testing is defined for 2D boxes and pose only (as in the original)")
        processed = [
            detect_multi_scale(network, task, image, scales, detector.spec, flip=flip, nms=nms, K=detector.K, device=device)
            for image in images
        ]
    results = [
        results_from_task_output(task.name, item, detector.class_names, image=image, path=path, calib=calib)
        for item, image, path, calib in zip(processed, images, paths, calibs)
    ]
    if detector.score_thresh > 0:
        results = [r.filter(detector.score_thresh) for r in results]
    return results


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict(weights, source: str | Path, batch_size: int = 8, calib=None, flip: bool | None = None, scales=None) -> Iterator[Results]:
    """Python API: yield ``Results`` for every image / video frame of ``source``."""
    detector = _detector(weights)
    for batch in _batches(iter_frames(source), batch_size):
        calibs = [read_calibration(calib, f.path) for f in batch] if detector.task.name == "ddd" else None
        yield from predict_images(detector, [f.image for f in batch], [f.path for f in batch], calibs, flip, scales)


def predict_to_folder(
    weights,
    source: str | Path,
    output: str | Path,
    score_thresh: float = 0.3,
    batch_size: int = 8,
    save_txt: bool = False,
    calib=None,
    flip: bool = False,
    scales: Sequence[float] | None = None,
) -> Path:
    """``centernet predict``: drawn images (or an annotated video), ``results.json`` and optional txt labels.

    ``results.json`` is in the COCO results format (``image_id`` = position of the image in the
    source, 0-based; ``category_id`` = the checkpoint's category ids); 3D models also write KITTI
    result files under ``kitti/``; ``save_txt`` writes YOLO txt labels under ``labels/``.
    """
    detector = _detector(weights)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    writers: dict[Path, cv2.VideoWriter] = {}
    rows: list[dict] = []
    image_index = 0
    try:
        for frame_batch in tqdm(_batches(iter_frames(source), batch_size), desc="predict", unit="batch"):
            calibs = [read_calibration(calib, f.path) for f in frame_batch] if detector.task.name == "ddd" else None
            results = predict_images(detector, [f.image for f in frame_batch], [f.path for f in frame_batch], calibs, flip, scales)
            for frame, result in zip(frame_batch, results):
                drawn = result.plot(score_thresh)
                if frame.frame_index is None:
                    cv2.imwrite(str(output / frame.name), drawn)
                else:
                    if frame.path not in writers:
                        fps, w, h = video_properties(frame.path)
                        writers[frame.path] = cv2.VideoWriter(str(output / f"{frame.path.stem}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    writers[frame.path].write(drawn)
                rows += result.to_coco(image_index, detector.category_ids)
                stem = Path(frame.name).stem
                if save_txt:
                    (output / "labels").mkdir(exist_ok=True)
                    h, w = frame.image.shape[:2]
                    (output / "labels" / f"{stem}.txt").write_text(result.filter(score_thresh).to_yolo(w, h))
                if result.boxes_3d is not None:
                    (output / "kitti").mkdir(exist_ok=True)
                    (output / "kitti" / f"{stem}.txt").write_text(result.to_kitti())
                    cv2.imwrite(str(output / f"{stem}_bev.png"), result.plot_birds_eye_view(score_thresh))
                image_index += 1
    finally:
        for writer in writers.values():
            writer.release()
    (output / "results.json").write_text(json.dumps(rows))
    return output
