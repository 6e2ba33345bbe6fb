"""The decoder's peak filter in an ONNX graph: onnxruntime's MaxPool gives exactly PyTorch's peaks.

``peak_filter`` computes the 3x3 window maximum with shifted maxima in PyTorch and with
``max_pool2d`` in an ONNX export (faster in onnxruntime); both must keep the same pixels, plateaus
included, and the top-K that follows must agree value for value.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from torch import nn

from centernet.tasks.decoding import peak_filter, topk

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


class _Peaks(nn.Module):
    def __init__(self, kernel: int, K: int) -> None:
        super().__init__()
        self.kernel, self.K = kernel, K

    def forward(self, heat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        peaks = peak_filter(heat, self.kernel)
        scores, inds, classes, _, _ = topk(peaks, self.K)
        return peaks, scores, classes * heat.shape[2] * heat.shape[3] + inds


def _onnx_session(module: nn.Module, sample: torch.Tensor):
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(module, (sample,), None, input_names=["heat"], opset_version=19, dynamo=True,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    model = program.model_proto
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]), model


@pytest.mark.parametrize("kernel", [3, 5])
def test_exported_peak_filter_keeps_pytorchs_peaks_plateaus_included(kernel: int) -> None:
    torch.manual_seed(0)
    module = _Peaks(kernel, K=30).eval()
    session, model = _onnx_session(module, torch.rand(2, 3, 12, 20))
    assert "MaxPool" in {node.op_type for node in model.graph.node}
    # Continuous scores, and coarse ones with many equal neighbours (plateaus: every pixel survives).
    plateaus = torch.randint(0, 4, (2, 3, 12, 20)).float() / 4
    for heat in (torch.rand(2, 3, 12, 20), plateaus, torch.sigmoid(torch.randn(1, 3, 12, 20) * 3)):
        with torch.no_grad():
            expected = [t.numpy() for t in module(heat)]
        got = session.run(None, {"heat": heat.numpy()})
        np.testing.assert_array_equal(got[0], expected[0])  # the filtered map, bit for bit
        np.testing.assert_array_equal(got[1], expected[1])  # top-K scores
        if heat is not plateaus:  # tied scores may come out of top-K in either order
            np.testing.assert_array_equal(got[2], expected[2])
    assert (expected[0] > 0).any() and (expected[0] == 0).any()
