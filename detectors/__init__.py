"""Vectorized detectors: per-sensor state in numpy arrays, one pass over a whole batch of readings."""

from core import FLAG_CODES, SEVERITY_NAMES, Detections, ReadingBatch

__all__ = ["FLAG_CODES", "SEVERITY_NAMES", "Detections", "ReadingBatch"]
