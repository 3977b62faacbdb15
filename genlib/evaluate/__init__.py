"""Evaluation stages: pure metric functions over arrays, and the suite that runs them on a checkpoint."""
