"""The parity comparison must reject a reference output perturbed by a little more than its tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REFERENCE_DIR
from tests.helpers import assert_close

_NPZ_METADATA = {"x", "weight_seed", "input_seed"}
MODEL_FILES = sorted(p.stem for p in (REFERENCE_DIR / "models").glob("*.npz")) or ["<no reference folder>"]


@pytest.mark.parametrize("name", MODEL_FILES)
def test_perturbed_head_output_is_rejected(name: str, reference_dir: Path) -> None:
    reference = np.load(reference_dir / "models" / f"{name}.npz")
    heads = sorted(set(reference.files) - _NPZ_METADATA)
    assert heads, f"{name}: no head outputs stored"
    for head in heads:
        expected = reference[head]
        assert_close(expected.copy(), expected, name=head)
        atol = 1e-3 * max(1.0, float(expected.std()))
        flat = np.abs(expected).argmax()
        perturbed = expected.copy()
        # 10x the allowed error at the element with the largest rtol slack.
        perturbed.flat[flat] += 10 * (atol + 1e-3 * abs(float(expected.flat[flat])))
        with pytest.raises(AssertionError):
            assert_close(perturbed, expected, name=head)
