"""Learning on real photographs: ResNet-18 overfits a handful of raccoon images (COCO AP50 >= 0.9 on them)."""
from __future__ import annotations

import pytest

from centernet.config import load_config
from centernet.engine.hooks import TrainerHook
from centernet.engine.trainer import train
from tests.helpers import raccoon_overfit_overrides

MAX_STEPS = 150  # one step per epoch: four images, batch 4
CHECK_EVERY = 25
MIN_AP50 = 0.9


class StopAtAP50(TrainerHook):
    """Ends the run at the first validation reaching ``MIN_AP50`` (the claim is "within 150 steps")."""

    def __init__(self) -> None:
        self.history: list[tuple[int, float]] = []

    def on_validation_end(self, trainer, metrics) -> None:
        self.history.append((trainer.state.epoch, metrics.stats["AP50"]))
        if metrics.stats["AP50"] >= MIN_AP50:
            trainer.request_stop()


@pytest.mark.slow
def test_res18_overfits_a_few_raccoons(tmp_path, data_dir):
    annotations = data_dir / "raccoon" / "train.json"
    cfg = load_config(
        None,
        [
            *raccoon_overfit_overrides(tmp_path, annotations),
            "model.arch=res_18",
            f"train.epochs={MAX_STEPS}",
            "train.lr_steps=[120]",
            f"train.val_interval={CHECK_EVERY}",
        ],
    )
    progress = StopAtAP50()
    metrics = train(cfg, hooks=[progress])
    assert metrics["AP50"] >= MIN_AP50, f"AP50 by epoch {progress.history}: {metrics}"
