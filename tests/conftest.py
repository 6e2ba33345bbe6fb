"""Shared test fixtures: where the reference fixtures and the shared data sets live.

``CENTERNET_REQUIRE_FIXTURES=1`` (set by ``.ci/run``) turns a missing fixture folder from a skip
into a failure: the session stops at once with a message saying what is missing, so CI cannot pass
with every parity, learning and real-data test skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Threads per test process: the cores shared out among pytest-xdist's workers. Two workers with two
# threads each on two cores oversubscribe them, and OpenMP's waiting threads then cost 4x per
# training step (measured: 1.85 s against 0.40 s for a ResNet-18 step with the other core busy).
# Set before torch is imported; subprocesses the tests start (the CLI) inherit it.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
os.environ["OMP_NUM_THREADS"] = str(_THREADS)

import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("CENTERNET_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))
DATA_DIR = Path(os.environ.get("CENTERNET_DATA_DIR", ROOT.parent / "shared" / "data"))
REQUIRE_FIXTURES = os.environ.get("CENTERNET_REQUIRE_FIXTURES", "") not in ("", "0")

torch.set_num_threads(_THREADS)


def _missing_fixture_folders() -> list[str]:
    return [
        f"{name} ({path}; set {variable})"
        for name, path, variable in (
            ("reference fixtures", REFERENCE_DIR, "CENTERNET_REFERENCE_DIR"),
            ("shared data sets", DATA_DIR, "CENTERNET_DATA_DIR"),
        )
        if not path.is_dir()
    ]


def pytest_sessionstart(session: pytest.Session) -> None:
    if REQUIRE_FIXTURES and _missing_fixture_folders():
        raise pytest.UsageError(
            "CENTERNET_REQUIRE_FIXTURES=1 but the test fixtures are missing: "
            + "; ".join(_missing_fixture_folders())
            + ". Lay ../shared beside the checkout (or point the variables at it)."
        )


@pytest.fixture(scope="session", autouse=True)
def _image_check_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The decode pass's cache goes to a temporary folder, never to the user's ~/.cache."""
    os.environ.setdefault("CENTERNET_CACHE_DIR", str(tmp_path_factory.mktemp("centernet-cache")))


def _absent(message: str) -> None:
    if REQUIRE_FIXTURES:
        pytest.fail(f"{message} (CENTERNET_REQUIRE_FIXTURES=1: fixtures are required)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Folder of the original implementation's fixtures; skips (loudly) only when absent and not required."""
    if not REFERENCE_DIR.is_dir():
        _absent(
            f"reference fixtures not found at {REFERENCE_DIR}; "
            "set CENTERNET_REFERENCE_DIR to the folder holding README.md, models/, targets/, ..."
        )
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder of the shared mini data sets (raccoon, coco_mini, kitti_mini)."""
    if not DATA_DIR.is_dir():
        _absent(f"shared data sets not found at {DATA_DIR}; set CENTERNET_DATA_DIR")
    return DATA_DIR
