"""The job layer: what the app reads from its config (:mod:`.spec`), checked in one place."""

from .spec import JobSpec, OutputSpec, ProviderBatchSpec, RunnerSpec

__all__ = ["JobSpec", "OutputSpec", "ProviderBatchSpec", "RunnerSpec"]
