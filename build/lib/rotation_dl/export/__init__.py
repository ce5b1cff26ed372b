"""ONNX export of trained models and torch-free production scoring with onnxruntime."""
