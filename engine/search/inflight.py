"""Several candidates in flight: scoring processes that each take the next candidate when free.

A laptop- or embedded-profile candidate keeps a large GPU busy for a sliver of its time; the rest is
Python building the network and launching small kernels. Several scoring processes overlap that work:
each has its own interpreter, CUDA context and seeded random state (so nothing is shared that could make
two candidates interfere) and a ``Scorer`` built once, and candidates go to whichever process is free.
A candidate's score depends only on the seed, its cell and its index (``engine.search.sampling``), so results are
identical to scoring one at a time; ``random_search`` hands them on in candidate order, so what a search
reports done is always a prefix of its stream and resumes as before.

Each process runs with the parent's number of CPU threads (a different count would change float rounding
on a CPU, and with it scores at 1e-12): this is for GPUs, where the CPU side is mostly waiting. A process
whose parent is gone exits by itself; one that fails raises its error, with its traceback, in the parent.
"""

from __future__ import annotations

import os
import queue
import signal
import time
import traceback

import torch
import torch.multiprocessing as mp

from engine.core.profiles import Profile, ScoreConfig
from engine.core.space import Genotype, Space
from engine.data.images import ImageData, ImageSplit
from engine.search.scorer import Scorer

POLL_S = 1.0  # how often an idle scoring process checks that its parent lives


class ScoringProcessError(RuntimeError):
    """A scoring process failed; the message carries its traceback."""


def _score_candidates(args: dict, threads: int, parent: int, tasks, results) -> None:
    """One scoring process: a Scorer, then candidates until told to stop or orphaned."""
    # Ctrl-C in a terminal reaches the whole process group: the parent decides what stops (the search at its
    # next candidate, a worker's job back to the queue) and closes these processes; interrupted here, a
    # candidate would come back as this process's failure and fail the job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    try:
        scorer = Scorer(**args)
        while os.getppid() == parent:  # an orphan stops, though candidates may still be queued for it
            try:
                task = tasks.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if task is None:
                return
            index, genotype = task
            started = time.perf_counter()
            score, silent, rate = scorer.score(Genotype.from_str(genotype), index)
            results.put((index, score, silent, rate, time.perf_counter() - started))
    except BaseException:  # noqa: BLE001 - handed to the parent, which raises it
        results.put(("error", traceback.format_exc()))


class ScoringProcesses:
    """``n`` scoring processes for one kernel set; ``submit`` candidates, ``next_result`` as they finish.

    Use as a context manager: leaving it stops the processes (at once: candidates in flight are dropped).
    """

    def __init__(
        self,
        n: int,
        kernel_set: Space,
        profile: Profile,
        data: ImageData,
        *,
        seed: int,
        device: torch.device | str,
        config: ScoreConfig | None,
    ) -> None:
        if n < 2:
            raise ValueError(f"candidates in flight need 2 processes or more, got {n}")
        # The processes need the training images only, as tensors (shared memory, not copied per process).
        images, labels = data.train.tensors()
        train = ImageSplit.from_tensors(images, labels)
        args = dict(
            kernel_set=kernel_set,
            profile=profile,
            data=ImageData(data.info, train, train),
            seed=seed,
            device=str(device),
            config=config,
        )
        context = mp.get_context("spawn")  # CUDA cannot be forked
        self.tasks, self.results = context.Queue(), context.Queue()
        self.processes = [
            context.Process(
                target=_score_candidates,
                daemon=True,
                name=f"spikernel-scoring-{i}",
                args=(args, torch.get_num_threads(), os.getpid(), self.tasks, self.results),
            )
            for i in range(n)
        ]
        for process in self.processes:
            process.start()
        self.in_flight = 0

    def submit(self, index: int, genotype: Genotype) -> None:
        self.tasks.put((index, genotype.to_str()))
        self.in_flight += 1

    def next_result(self) -> tuple[int, float, int, float, float]:
        """``(index, score, silent_layers, firing_rate, seconds)`` of the next candidate to finish."""
        while True:
            try:
                item = self.results.get(timeout=POLL_S)
            except queue.Empty:
                dead = [p.name for p in self.processes if not p.is_alive()]
                if dead:
                    raise ScoringProcessError(
                        f"scoring process(es) {', '.join(dead)} exited without a result"
                    ) from None
                continue
            if item[0] == "error":
                raise ScoringProcessError(f"a scoring process failed:\n{item[1]}")
            self.in_flight -= 1
            return item

    def close(self) -> None:
        """Stops every process: idle ones are told to, busy ones (candidates in flight) are killed."""
        for _ in self.processes:
            self.tasks.put(None)
        deadline = time.monotonic() + POLL_S
        for process in self.processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for q in (self.tasks, self.results):
            q.cancel_join_thread()  # what is left in them was for processes that are gone
            q.close()

    def __enter__(self) -> ScoringProcesses:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
