"""Inference: a generator applied to images (whole or in tiles), exported to ONNX or run by onnxruntime."""
