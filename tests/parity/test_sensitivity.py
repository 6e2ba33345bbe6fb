"""The parity comparison must reject a reference output perturbed by a little more than its tolerance (1 %), and accept one a little less."""

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
        # The tolerance at the element with the largest rtol slack (assert_close: atol + 1e-3 * |expected|).
        tolerance = atol + 1e-3 * abs(float(expected.flat[flat]))
        for factor, accepted in ((0.99, True), (1.01, False)):  # just inside, then just outside it
            perturbed = expected.astype(np.float64)  # float64: the step is not rounded away
            perturbed.flat[flat] += factor * tolerance
            if accepted:
                assert_close(perturbed, expected, name=head)
            else:
                with pytest.raises(AssertionError):
                    assert_close(perturbed, expected, name=head)
