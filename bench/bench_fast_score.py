"""What the opt-in bf16 scoring mode changes: the search's pick and the ranking, against fp32.

For each seed, the same sampled cells are scored twice by ``Scorer`` (``ScoreConfig.precision`` fp32 and
bf16, interleaved cell by cell, same weights and batches) and the report gives, per seed: whether the
top-1 cell is the same, Spearman's rho between the two score lists, and the time per candidate of each.

    python bench/bench_fast_score.py --profile laptop --candidates 200 --seeds 3          # CPU
    python bench/bench_fast_score.py --profile paper --candidates 200 --seeds 3 --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from scipy.stats import spearmanr

from engine.core.profiles import get_profile
from engine.core.space import KernelSet
from engine.data.images import load_dataset
from engine.search.sampling import RandomSampler, Scorer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="laptop")
    ap.add_argument("--kernel-set", default="3x3_5x5")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    profile, ks = get_profile(args.profile), KernelSet.parse(args.kernel_set)
    data = load_dataset("sample")
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    print(f"command: python bench/bench_fast_score.py {flags}")
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}\n")
    print("| seed | candidates | same top-1 | Spearman rho | fp32 s/cand | bf16 s/cand | bf16 speed-up |")
    print("|---|---|---|---|---|---|---|")
    same, rhos, speedups = 0, [], []
    for seed in range(args.seeds):
        cells = [g for g, _ in zip(RandomSampler(seed), range(args.candidates))]
        scorers = {
            p: Scorer(
                ks, profile, data, seed=seed, device=device, config=dataclasses.replace(profile.score, precision=p)
            )
            for p in ("fp32", "bf16")
        }
        for s in scorers.values():
            s.score(cells[0], 0)  # warm-up
        scores = {p: [] for p in scorers}
        seconds = {p: 0.0 for p in scorers}
        for i, g in enumerate(cells):
            for p, s in scorers.items():
                sync(device)
                t0 = time.perf_counter()
                scores[p].append(s.score(g, i)[0])
                sync(device)
                seconds[p] += time.perf_counter() - t0
        top = {p: max(range(len(cells)), key=scores[p].__getitem__) for p in scores}
        rho = spearmanr(scores["fp32"], scores["bf16"]).statistic
        same += top["fp32"] == top["bf16"]
        rhos.append(rho)
        speedups.append(seconds["fp32"] / seconds["bf16"])
        print(
            f"| {seed} | {len(cells)} | {'yes' if top['fp32'] == top['bf16'] else 'no'} | {rho:.3f} | "
            f"{seconds['fp32'] / len(cells):.4f} | {seconds['bf16'] / len(cells):.4f} | {speedups[-1]:.2f}x |",
            flush=True,
        )
    print(
        f"\nsame top-1 in {same} of {args.seeds} seeds; median Spearman {statistics.median(rhos):.3f}; "
        f"median bf16 speed-up {statistics.median(speedups):.2f}x ({args.profile} {ks}, {device})"
    )


if __name__ == "__main__":
    main()
