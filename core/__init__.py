"""The neutral data model every layer imports: reading batches, detections, flag codes, severities, field
names, and the small helpers written once for all (UTC timestamps, backoff, directory fsync).

Ingest produces `ReadingBatch`; detectors consume it and produce `Detections`; the alert engine consumes
`Detections` (never detector classes). This package imports nothing of citywatch's own.
"""

from core.batch import FLAG_CODES, GAS_FIELDS, NOISE_FIELDS, ReadingBatch
from core.detections import Detections, LazyContexts
from core.severity import SEVERITY_CODES, SEVERITY_NAMES

__all__ = ["FLAG_CODES", "GAS_FIELDS", "NOISE_FIELDS", "SEVERITY_CODES", "SEVERITY_NAMES", "Detections", "LazyContexts", "ReadingBatch"]
