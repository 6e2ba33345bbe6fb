"""Learning on real photographs: ResNet-18 overfits a handful of raccoon images (COCO AP50 >= 0.9 on them)."""
from __future__ import annotations

import pytest

from centernet.config import load_config
from centernet.engine.trainer import train


@pytest.mark.slow
def test_res18_overfits_a_few_raccoons(tmp_path, data_dir):
    annotations = data_dir / "raccoon" / "train.json"
    cfg = load_config(
        None,
        [
            f"project={tmp_path}",
            "name=raccoon",
            f"data.source={annotations}",
            f"data.val_source={annotations}",  # validate on the training images themselves
            "data.max_images=4",
            "data.input_size=[128,128]",
            "data.num_workers=0",
            "augment.random_crop=false",
            "augment.scale=0",
            "augment.shift=0",
            "augment.flip=0",
            "augment.color=false",
            "model.arch=res_18",
            "train.batch_size=4",
            "train.lr=2e-3",
            "train.epochs=150",
            "train.schedule_epochs=null",
            "train.lr_steps=[120]",
            "train.val_interval=150",
            "train.save_images=0",
            "train.seed=1",
        ],
    )
    metrics = train(cfg)
    assert metrics["AP50"] >= 0.9, metrics
