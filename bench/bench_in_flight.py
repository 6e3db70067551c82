"""Candidates in flight: a search's candidates per second with 1 and more scoring processes, same results.

    python bench/bench_in_flight.py --device cuda                     # laptop and embedded, 1/2/4/8 in flight
    python bench/bench_in_flight.py --candidates 12 --in-flight 1,2       # a CPU check of the mechanics

Each row is one ``random_search`` of the same seed; the rate is taken from the first candidate handed
on to the last (the processes' start-up, printed apart, is paid once per search), and every row's candidates
are compared with one at a time's: same cells, bitwise the same scores.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from engine.core.profiles import get_profile
from engine.core.space import KernelSet
from engine.data.images import load_dataset
from engine.search.sampling import random_search


def timed_search(profile, data, args, in_flight: int):
    stamps: list[float] = []
    started = time.perf_counter()
    result = random_search(
        KernelSet.parse(args.kernel_set),
        profile,
        data,
        args.candidates,
        seed=args.seed,
        device=args.device,
        in_flight=in_flight,
        on_candidate=lambda _c: stamps.append(time.perf_counter()),
    )
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return result, rate, stamps[0] - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profiles", default="laptop,embedded")
    parser.add_argument("--kernel-set", default="3x3_5x5")
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--in-flight", default="1,2,4,8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default="sample")
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"device: {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads per process")
    print(
        f"command: python bench/bench_in_flight.py {' '.join(f'--{k.replace(chr(95), chr(45))} {v}' for k, v in vars(args).items())}\n"
    )
    print("| profile | in flight | candidates/s | vs 1 | first candidate after | same results as 1 |")
    print("|---|---|---|---|---|---|")
    for name in args.profiles.split(","):
        profile = get_profile(name)
        base = None
        for in_flight in (int(s) for s in args.in_flight.split(",")):
            result, rate, first = timed_search(profile, data, args, in_flight)
            scored = [(c.index, c.genotype, c.score) for c in result.candidates]
            base = base or (scored, rate)
            same = "yes" if scored == base[0] else "NO"
            print(f"| {name} | {in_flight} | {rate:.1f} | {rate / base[1]:.2f}x | {first:.1f} s | {same} |", flush=True)


if __name__ == "__main__":
    main()
