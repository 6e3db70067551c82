"""Where a search candidate's time goes: convolutions, BatchNorm, LIF, the Gram matrix, data, the rest.

Scores cells with ``Scorer.score`` while every part of the network is wrapped in a profiler label (by
class, from the outside, so any version of the engine can be profiled the same way: run it from another
checkout with ``PYTHONPATH``), then reports each part's wall time per candidate and share.

    python bench/profile_search.py --profile laptop --candidates 12
    python bench/profile_search.py --profile paper --macro cifar100 --candidates 1
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import torch

import engine.search.hamming as score
import engine.search.sampling as search
from engine.core.profiles import get_profile
from engine.core.space import Genotype, KernelSet
from engine.data.images import load_dataset
from engine.nn import layers, neuron
from engine.search.sampling import RandomSampler, Scorer

PARTS = {  # label: (module, attribute) wrapped
    "convolutions": [(layers.SeqConv2d, "forward")],
    "BatchNorm": [(layers.SeqBatchNorm2d, "forward")],
    "LIF": [(neuron.LIF, "forward")],
    "Gram matrix and kernel": [(score.KernelAccumulator, "add")],
    "pooling": [(layers.SeqAvgPool2d, "forward")],
    "input encoding": [(search, "encode")],
    "building the network": [(search, "build_network")],
}


def wrap(totals: dict) -> list:
    """Time every part (outermost call only, so nested parts are not counted twice)."""
    restore, depth = [], [0]
    for label, targets in PARTS.items():
        for owner, name in targets:
            original = getattr(owner, name)

            def timed(*args, _original=original, _label=label, **kwargs):
                if depth[0]:
                    return _original(*args, **kwargs)
                depth[0] += 1
                t0 = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    totals[_label] += time.perf_counter() - t0
                    depth[0] -= 1

            setattr(owner, name, timed)
            restore.append((owner, name, original))
    return restore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="laptop")
    ap.add_argument("--macro", default=None, help="another macro network for the sample's images (cifar100)")
    ap.add_argument("--kernel-set", default="1x1_3x3")
    ap.add_argument("--cell", default=None, help="one cell to time (default: sampled cells)")
    ap.add_argument("--candidates", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    profile, ks = get_profile(args.profile), KernelSet.parse(args.kernel_set)
    data = load_dataset("sample")
    if args.macro:
        classes = tuple(f"class{i}" for i in range(100 if args.macro == "cifar100" else 10))
        data = dataclasses.replace(data, info=dataclasses.replace(data.info, macro=args.macro, classes=classes))
    cells = (
        [Genotype.from_str(args.cell)] * args.candidates
        if args.cell
        else [g for g, _ in zip(RandomSampler(0), range(args.candidates))]
    )
    scorer = Scorer(ks, profile, data, seed=0)
    scorer.score(cells[0], 10_000)  # warm-up
    totals: dict[str, float] = defaultdict(float)
    restore = wrap(totals)
    t0 = time.perf_counter()
    for i, g in enumerate(cells):
        scorer.score(g, i)
    wall = time.perf_counter() - t0
    for owner, name, original in restore:
        setattr(owner, name, original)
    # Nested parts are counted by their outermost label; conv/BN/pool calls inside a part would be
    # double counted otherwise, so "the rest" is the wall time minus the labelled parts.
    totals["the rest (sums, hooks, Python)"] = wall - sum(totals.values())
    n = len(cells)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(search.__file__).parent
    ).stdout.strip()
    print(
        f"engine at {head or 'unknown'}; {args.profile} profile"
        f"{f', {args.macro} macro' if args.macro else ''}, {ks}, {n} candidate(s), {args.threads} threads: "
        f"{wall / n:.3f} s per candidate\n"
    )
    print("| part | s per candidate | share |\n|---|---|---|")
    for label, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {seconds / n:.4f} | {seconds / wall:.0%} |")


if __name__ == "__main__":
    main()
