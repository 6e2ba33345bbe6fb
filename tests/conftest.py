"""Shared test fixtures: where the reference fixtures and the shared data sets live."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("CENTERNET_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))
DATA_DIR = Path(os.environ.get("CENTERNET_DATA_DIR", ROOT.parent / "shared" / "data"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Folder of the original implementation's fixtures; skips (loudly) only when absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(
            f"reference fixtures not found at {REFERENCE_DIR}; "
            "set CENTERNET_REFERENCE_DIR to the folder holding README.md, models/, targets/, ..."
        )
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder of the shared mini data sets (raccoon, coco_mini, kitti_mini)."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared data sets not found at {DATA_DIR}; set CENTERNET_DATA_DIR")
    return DATA_DIR
