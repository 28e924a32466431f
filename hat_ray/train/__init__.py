"""Training (supernet / subnet), checkpoints and resume, Ray Train data parallelism, evaluation."""
