"""Batch stylization on a Ray cluster with Ray Data (``instyle stylize --engine ray``,
``instyle.stylize_dataset``): see docs/ray.md. Ray is an optional dependency (``instyle[ray]``),
imported only when a job runs."""

from instyle.engine.batch.api import model_spec, stylize_dataset
from instyle.engine.batch.job import DEFAULT_BATCH_SIZE, BatchJob, BatchResult, JobSummary
from instyle.engine.batch.spec import KINDS, ModelSpec, spec_of

__all__ = [
    "BatchJob", "BatchResult", "DEFAULT_BATCH_SIZE", "JobSummary", "KINDS", "ModelSpec", "model_spec", "spec_of",
    "stylize_dataset",
]  # fmt: skip
