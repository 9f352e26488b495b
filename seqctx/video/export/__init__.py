"""``seqctx export``: a trained recognizer as an ONNX file or a ``torch.export`` program, checked
with onnxruntime, and predictions with onnxruntime. Imports the models and the engine; only the
CLI imports it (as ``analysis``)."""

from .deploy import INPUT_LAYOUT, ClipRecognizer
from .exporters import EXPORT_FORMATS, ExportedModel, export_checkpoint, verify_export
from .runtime import OnnxRecognizer, predict_onnx

__all__ = [
    "EXPORT_FORMATS", "INPUT_LAYOUT", "ClipRecognizer", "ExportedModel", "OnnxRecognizer", "export_checkpoint",
    "predict_onnx", "verify_export",
]  # fmt: skip
