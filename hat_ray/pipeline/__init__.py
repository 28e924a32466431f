"""Experiment pipelines: `hat-ray pipeline CONFIG.yaml` and `hat-ray demo` (see run.py)."""
