"""Deployment: ONNX export with in-graph decoding."""
