"""The ONNX contract between training and serving: the exporter and the torch-free runtime."""
