"""Training-free random search over one space's cells (a kernel set, or a benchmark's space).

The paper's procedure scores exactly N sampled cells and keeps the best; the exhaustive mode scores the
distinct cells instead, each once, in an order shuffled by the seed. Everything is seeded: the cell
stream comes from the seed alone, and candidate ``i``'s weights and batches from ``(seed, i)``, or from the
seed alone when draws are shared, so a search resumed after candidate ``i`` reaches the same result.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch

from engine.core.errors import InputError
from engine.core.footprint import footprint
from engine.core.profiles import Profile, ScoreConfig
from engine.core.space import Genotype, Space
from engine.data.images import ImageData
from engine.search.inflight import ScoringProcesses
from engine.search.scorer import Scorer

# ---------------------------------------------------------------------------------------- samplers


class Sampler(ABC):
    """Proposes cells; seeded in the constructor so the same seed gives the same stream."""

    @abstractmethod
    def __iter__(self) -> Iterator[Genotype]: ...


class RandomSampler(Sampler):
    """SNASNet's random sampling: uniform ops per edge; in a pruned space, pruned and resampled until node 0
    feeds node 3."""

    def __init__(self, space: Space, seed: int) -> None:
        self.space, self.seed = space, seed

    def __iter__(self) -> Iterator[Genotype]:
        return self.space.random_cells(self.seed)


class ExhaustiveSampler(Sampler):
    """Every distinct cell once, in the seed's ``exhaustive_order``, then stops (beyond the paper)."""

    def __init__(self, space: Space, seed: int) -> None:
        self.space, self.seed = space, seed

    def __iter__(self) -> Iterator[Genotype]:
        yield from self.space.exhaustive_order(self.seed)


# -------------------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    """One scored cell. ``conv_edges``, ``silent_layers`` and ``firing_rate`` show what the score rewarded."""

    index: int
    genotype: Genotype
    score: float
    params: int
    params_torch: int
    conv_edges: int
    silent_layers: int
    firing_rate: float
    seconds: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["genotype"] = self.genotype.to_str()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        return cls(**{**d, "genotype": Genotype.from_str(d["genotype"])})


# ------------------------------------------------------------------------------------------ search


@dataclass
class SearchResult:
    kernel_set: Space
    iterations: int
    seed: int
    candidates: list[Candidate] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False  # ended early by ``should_stop``

    @property
    def best(self) -> Candidate | None:
        """The highest score; the earliest candidate wins a tie, as argmax does."""
        return max(self.candidates, key=lambda c: c.score, default=None)

    @property
    def setting(self) -> str:
        return f"{self.kernel_set.name}_{self.iterations}x"


Progress = Callable[[int, int, Candidate | None], None]


def random_search(
    kernel_set: Space,
    profile: Profile,
    data: ImageData,
    iterations: int,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    config: ScoreConfig | None = None,
    dedupe: bool = False,
    exhaustive: bool = False,
    max_params: int | None = None,
    in_flight: int = 1,
    progress: Progress | None = None,
    on_candidate: Callable[[Candidate], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    done: Sequence[Candidate] = (),
) -> SearchResult:
    """Score ``iterations`` sampled cells and return them all.

    Args:
        dedupe: score each canonical cell once (beyond the paper; off reproduces it).
        exhaustive: score the distinct cells in the seed's ``exhaustive_order`` instead of sampling (beyond
            the paper): ``iterations`` of at most ``len(distinct_cells())`` take the first ones. With
            ``max_params`` the cells over budget are passed over and the total is capped by how many
            remain; ``result.iterations`` is that total.
        max_params: discard cells over this Eq. 2-3 parameter count before building them (beyond the paper).
        in_flight: score this many candidates at once, each in a process of its own (``engine.search.inflight``; for
            GPUs), with the same results as one at a time.
        progress: called after each candidate with (done, total, best so far).
        on_candidate: called with each newly scored candidate (to record it as it comes).
        should_stop: polled between candidates; when it returns True the search ends with ``stopped``.
        done: candidates already scored by an interrupted run with the same arguments; they are kept
            and the search continues after them.
    """
    if iterations < 1:
        raise InputError(f"iterations must be at least 1, got {iterations}")
    if in_flight < 1:
        raise InputError(f"candidates in flight must be at least 1, got {in_flight}")
    Scorer.check(config or profile.score, data)
    if max_params is not None:
        smallest = footprint(kernel_set.extremes()[0], kernel_set, profile, data.info).params
        if max_params < smallest:
            raise InputError(
                f"the parameter budget {max_params:,} is below the smallest {kernel_set.name} network "
                f"of the {profile.name} profile ({smallest:,}); raise the budget"
            )
    if exhaustive:
        cells = kernel_set.distinct_cells()
        if iterations > len(cells):
            raise InputError(
                f"only {len(cells):,} distinct cells exist; "
                f"an exhaustive search takes {len(cells):,} iterations or fewer"
            )
        if max_params is not None:
            within = sum(footprint(g, kernel_set, profile, data.info).params <= max_params for g in cells)
            iterations = min(iterations, within)
    started = time.perf_counter()
    result = SearchResult(kernel_set, iterations, seed, candidates=list(done))
    proposals = _proposals(kernel_set, profile, data, iterations, seed, dedupe, exhaustive, max_params, len(done))

    def add(index: int, genotype: Genotype, fp, score: float, silent: int, rate: float, seconds: float) -> None:
        result.candidates.append(
            Candidate(
                index=index,
                genotype=genotype,
                score=score,
                params=fp.params,
                params_torch=fp.params_torch,
                conv_edges=kernel_set.conv_edges(genotype),
                silent_layers=silent,
                firing_rate=rate,
                seconds=seconds,
            )
        )
        if on_candidate is not None:
            on_candidate(result.candidates[-1])
        if progress is not None:
            progress(len(result.candidates), iterations, result.best)

    if in_flight > 1:
        result.stopped = _score_in_flight(
            in_flight,
            proposals,
            add,
            len(done),
            should_stop,
            dict(kernel_set=kernel_set, profile=profile, data=data, seed=seed, device=device, config=config),
        )
    else:
        scorer = Scorer(kernel_set, profile, data, seed=seed, device=device, config=config)
        for index, genotype, fp in proposals:
            if should_stop is not None and should_stop():
                result.stopped = True
                break
            t0 = time.perf_counter()
            score, silent, rate = scorer.score(genotype, index)
            add(index, genotype, fp, score, silent, rate, time.perf_counter() - t0)
    result.seconds = time.perf_counter() - started
    return result


def _proposals(kernel_set, profile, data, iterations, seed, dedupe, exhaustive, max_params, start):
    """``(index, genotype, footprint)`` of each candidate from ``start`` on: the seed's whole stream is
    replayed (passing over repeats and cells over budget as the search does), so a resumed search scores
    the same cells."""
    seen: set[Genotype] = set()
    repeats = 0
    proposals = iter(ExhaustiveSampler(kernel_set, seed) if exhaustive else RandomSampler(kernel_set, seed))
    index = 0
    while index < iterations:
        genotype = next(proposals, None)
        if genotype is None:  # the exhaustive order ran out
            return
        if dedupe:
            key = kernel_set.canonical(genotype)
            if key in seen:
                repeats += 1
                if repeats > 100_000:
                    raise InputError(f"only {len(seen)} distinct cells exist; ask for fewer iterations")
                continue
            seen.add(key)
        fp = footprint(genotype, kernel_set, profile, data.info)
        if max_params is not None and fp.params > max_params:
            continue
        if index >= start:
            yield index, genotype, fp
        index += 1


def _score_in_flight(processes: int, proposals, add, start: int, should_stop, scorer_args: dict) -> bool:
    """Candidates scored by ``processes`` processes (``engine.search.inflight``), two queued per process,
    handed to ``add`` in index order. Returns whether ``should_stop`` ended it (candidates in flight are then
    dropped)."""
    waiting: dict[int, tuple] = {}  # submitted, not handed on yet: index -> (genotype, footprint)
    finished: dict[int, tuple] = {}  # scored out of order, waiting for an earlier index
    expected, exhausted = start, False
    with ScoringProcesses(processes, **scorer_args) as pool:
        while True:
            if should_stop is not None and should_stop():
                return True
            while not exhausted and pool.in_flight < 2 * processes:
                proposal = next(proposals, None)
                if proposal is None:
                    exhausted = True
                    break
                index, genotype, fp = proposal
                waiting[index] = (genotype, fp)
                pool.submit(index, genotype)
            if not waiting:
                return False
            index, *scored = pool.next_result()
            finished[index] = scored
            while expected in finished:
                add(expected, *waiting.pop(expected), *finished.pop(expected))
                expected += 1
