"""Comparison helpers for the parity and behaviour tests."""
from __future__ import annotations

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
