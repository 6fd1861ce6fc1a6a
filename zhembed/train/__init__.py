"""Training: distillation from a teacher and fine-tuning on labelled pairs (needs the [train] extra)."""
