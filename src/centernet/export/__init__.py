"""Deployment of every task: ONNX export with the task's decoding (and flip test) in the graph, INT8, onnxruntime.

``export_onnx`` (``onnx``: the export), ``OnnxDetector`` (``runtime``: the graph run with the
Predictor's pre-processing and merge), ``ExportMetadata`` / ``read_metadata`` (``metadata``), the
traced modules and graph inputs (``graph``), static INT8 quantisation (``int8``).
"""
from centernet.export.metadata import ExportMetadata, read_metadata
from centernet.export.onnx import export_onnx
from centernet.export.runtime import OnnxDetector

__all__ = ["ExportMetadata", "OnnxDetector", "export_onnx", "read_metadata"]
