"""The embedded demo: train ResNet-18 on the built-in synthetic shapes, evaluate COCO AP, draw predictions."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from centernet.config import load_config

DEMO_RECIPE = "ctdet_res18_synthetic"


def run_demo(output: str | Path = "runs/demo", overrides: Sequence[str] = (), resume: bool = False) -> dict:
    """Train the demo recipe into ``output`` (replacing an earlier demo there), then predict on validation images.

    ``resume``: continue the interrupted demo in ``output`` from its ``last.pt`` instead (``centernet
    demo --resume``; the overrides may change only ``config.RESUME_SAFE_FIELDS``).
    Returns the final validation metrics, the run folder and where the drawn predictions are.
    """
    from centernet.models.detector import CenterNet
    from centernet.models.predictor import Predictor
    from centernet.engine.dataset import load_split
    from centernet.engine.trainer import train

    output = Path(output)
    # An earlier demo there is replaced whole (never mixed with this one); a live one refuses.
    if resume:
        from centernet.engine.run_folder import resume_config

        cfg = resume_config(output, list(overrides))
    else:
        cfg = load_config(DEMO_RECIPE, [f"project={output.parent}", f"name={output.name}", "on_existing_run=overwrite", *overrides])
    started = time.time()
    summary = train(cfg, resume=resume)
    detector = CenterNet.from_checkpoint(output / "best.pt")
    data = load_split(cfg, "val")
    folder = output / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    shown = range(min(8, len(data)))
    images = [data.load_image(i) for i in shown]
    for index, result in zip(shown, Predictor.for_detector(detector).detect(images)):
        result.save(folder / f"synthetic_{index:03d}.jpg")
    summary.update({"predictions": str(folder), "minutes": round((time.time() - started) / 60, 2)})
    print(f"demo: COCO AP {summary.get('AP', float('nan')):.3f} (AP50 {summary.get('AP50', float('nan')):.3f}) on the synthetic validation set")
    return summary
