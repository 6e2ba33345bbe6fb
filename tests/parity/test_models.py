"""Network parity with the original CenterNet: for every manifest in ``<reference>/manifests``.

Each network is built from its manifest, must have the original's state-dict keys, shapes and
dtypes, loads the documented deterministic weights with ``strict=True`` and must reproduce the
original's raw head outputs on the stored input.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from centernet.models import build_model
from tests.conftest import REFERENCE_DIR
from tests.helpers import assert_close

_NPZ_METADATA = {"x", "weight_seed", "input_seed"}
# Without the reference folder one placeholder case still runs, so the ``reference_dir`` fixture
# reports the missing folder as a skip instead of an empty parameter set.
MANIFEST_NAMES = sorted(p.stem for p in (REFERENCE_DIR / "manifests").glob("*.json")) or ["<no reference folder>"]


@pytest.fixture(scope="module")
def weights_rule(reference_dir: Path) -> ModuleType:
    """The reference folder's ``weights_rule.py``, imported from its file."""
    spec = importlib.util.spec_from_file_location("centernet_reference_weights_rule", reference_dir / "weights_rule.py")
    assert spec is not None and spec.loader is not None, "weights_rule.py missing from the reference folder"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flatten_outputs(outputs: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Single-stack networks return a dict; Hourglass a list of per-stack dicts (``<head>__stack<i>``)."""
    if isinstance(outputs, dict):
        return outputs
    return {f"{head}__stack{i}": value for i, stack in enumerate(outputs) for head, value in stack.items()}


@pytest.mark.parametrize("name", MANIFEST_NAMES)
def test_network_matches_original(name: str, reference_dir: Path, weights_rule: ModuleType) -> None:
    manifest = json.loads((reference_dir / "manifests" / f"{name}.json").read_text())
    reference = np.load(reference_dir / "models" / f"{name}.npz")
    model = build_model(manifest["arch"], manifest["heads"], manifest["head_conv"])

    own = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    expected = {k: (tuple(shape), dtype.removeprefix("torch.")) for k, shape, dtype in manifest["state_dict"]}
    missing, unexpected = sorted(expected.keys() - own.keys()), sorted(own.keys() - expected.keys())
    assert not missing and not unexpected, f"{name}: missing keys {missing[:10]}, unexpected keys {unexpected[:10]}"
    wrong = {k: (own[k], expected[k]) for k in expected if own[k] != expected[k]}
    assert not wrong, f"{name}: (shape, dtype) differ from the original: {dict(list(wrong.items())[:10])}"
    assert len(own) == manifest["num_keys"]
    float_numel = sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())
    assert float_numel == manifest["num_params"]

    model.load_state_dict(weights_rule.deterministic_state_dict(manifest, int(reference["weight_seed"])), strict=True)
    model.eval()
    with torch.no_grad():
        raw = model(torch.from_numpy(reference["x"]))
    outputs = _flatten_outputs(raw)
    stacks = raw if isinstance(raw, list) else [raw]
    for stack in stacks:
        assert list(stack) == list(manifest["heads"]), f"{name}: heads returned in order {list(stack)}"
    assert set(outputs) == set(reference.files) - _NPZ_METADATA
    for head, value in outputs.items():
        assert_close(value, reference[head], name=f"{name} {head}")
