"""Evaluation of frozen or fine-tuned backbones: linear probe, semi-supervised, kNN."""
