"""Comparison helpers for the parity and behaviour tests."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch


def assert_close(actual, expected, name: str = "", atol: float | None = None, rtol: float = 1e-3) -> None:
    """Parity comparison: ``atol = 1e-3 * max(1, std(expected))`` and ``rtol = 1e-3`` by default.

    Shapes must match exactly. Pass a tighter ``atol`` / ``rtol`` for deterministic maths.
    """
    actual = np.asarray(actual.detach().cpu() if isinstance(actual, torch.Tensor) else actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != reference {expected.shape}"
    if atol is None:
        atol = 1e-3 * max(1.0, float(expected.std())) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol, err_msg=name)


def fixed_input_batch(task, data, spec):
    """Every image of ``data`` as one training batch without augmentation.

    Returns inputs ``[N, 3, H, W]`` (the test-time letterboxes) and the task's targets stacked by
    the engine's ``collate``.
    """
    from centernet.engine.dataset import collate

    inputs, targets = [], []
    for index, record in enumerate(data.records):
        network_input, meta = spec.inference_input(data.load_image(index))
        inputs.append(network_input)
        targets.append(task.encode(record.annotations(), meta))
    return torch.from_numpy(np.stack(inputs)), collate(targets)


def raccoon_overfit_overrides(project, annotations) -> list[str]:
    """The learning tests' shared setting: four raccoon photos at 128, no augmentation, validated on themselves."""
    return [
        f"project={project}",
        "name=raccoon",
        f"data.source={annotations}",
        f"data.val_source={annotations}",  # validate on the training images themselves
        "data.val_split=all",
        "data.max_images=4",
        "data.input_size=[128,128]",
        "data.num_workers=0",
        "augment.random_crop=false",
        "augment.scale=0",
        "augment.shift=0",
        "augment.flip=0",
        "augment.color=false",
        "train.batch_size=4",
        "train.lr=2e-3",
        "train.schedule_epochs=null",
        "train.save_images=0",
        "train.seed=1",
    ]


def tiny_synthetic_run(train_images: int = 8, val_images: int = 4) -> list[str]:
    """The CLI tests' seconds-long run: a small res_18 on 64-pixel synthetic shapes, no workers or drawings."""
    return [
        "data.source=synthetic",
        f"data.synthetic_images={{train: {train_images}, val: {val_images}}}",
        "data.synthetic_image_size=64",
        "data.input_size=[64,64]",
        "data.num_workers=0",
        "model.head_conv=16",
        "train.batch_size=4",
        "train.save_images=0",
    ]


def raccoon_as_yolo(raccoon: Path, root: Path, count: int, link: bool = False) -> Path:
    """The first ``count`` raccoon training photos as an Ultralytics YOLO tree under ``root``:
    ``images/train`` (copies, or links with ``link``) and ``labels/train`` converted from the COCO
    json (class 0, normalised centre and size). Returns ``root``; the data yaml is the caller's."""
    coco = json.loads((raccoon / "train.json").read_text())
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for image in coco["images"][:count]:
        if link:
            (root / "images" / "train" / image["file_name"]).symlink_to(raccoon / "images" / image["file_name"])
        else:
            shutil.copy(raccoon / "images" / image["file_name"], root / "images" / "train")
        lines = []
        for ann in coco["annotations"]:
            if ann["image_id"] == image["id"]:
                x, y, w, h = ann["bbox"]
                W, H = image["width"], image["height"]
                lines.append(f"0 {(x + w / 2) / W:.6f} {(y + h / 2) / H:.6f} {w / W:.6f} {h / H:.6f}")
        (root / "labels" / "train" / f"{Path(image['file_name']).stem}.txt").write_text("\n".join(lines) + "\n")
    return root
