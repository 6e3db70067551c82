"""Training-free search: the spike-pattern kernel, the scorer, random and exhaustive search, candidates in flight."""

from engine.search.hamming import (
    KernelAccumulator,
    gram,
    hamming_kernel,
    kernel_from_gram,
    log_abs_det,
    sahd_score,
)
from engine.search.inflight import (
    POLL_S,
    ScoringProcessError,
    ScoringProcesses,
)
from engine.search.sampling import (
    Candidate,
    ExhaustiveSampler,
    Progress,
    RandomSampler,
    Sampler,
    SearchResult,
    random_search,
)
from engine.search.scorer import (
    Scorer,
)

__all__ = [
    "Candidate",
    "ExhaustiveSampler",
    "gram",
    "hamming_kernel",
    "kernel_from_gram",
    "KernelAccumulator",
    "log_abs_det",
    "POLL_S",
    "Progress",
    "random_search",
    "RandomSampler",
    "sahd_score",
    "Sampler",
    "Scorer",
    "ScoringProcessError",
    "ScoringProcesses",
    "SearchResult",
]
