"""Shared by every test package: pytest puts this folder on sys.path, so test modules can
import the helpers kept here (e.g. ``onnx_models``, the tiny ONNX model without torch)."""
