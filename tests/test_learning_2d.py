"""Learning on real photographs: ResNet-18 overfits a handful of raccoon images (COCO AP50 >= 0.9 on them)."""
from __future__ import annotations

import pytest

from centernet.config import load_config
from centernet.engine.trainer import train
from tests.helpers import raccoon_overfit_overrides


@pytest.mark.slow
def test_res18_overfits_a_few_raccoons(tmp_path, data_dir):
    annotations = data_dir / "raccoon" / "train.json"
    cfg = load_config(
        None,
        [
            *raccoon_overfit_overrides(tmp_path, annotations),
            "model.arch=res_18",
            "train.epochs=150",
            "train.lr_steps=[120]",
            "train.val_interval=150",
        ],
    )
    metrics = train(cfg)
    assert metrics["AP50"] >= 0.9, metrics
