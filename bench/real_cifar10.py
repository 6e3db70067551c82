"""Real-data check: laptop-profile training on the real CIFAR-10 (JPEG ImageFolder zip), not a test.

    python bench/real_cifar10.py path/to/cifar10-jpg.zip --train-per-class 1000 --epochs 2

Extracts the first N training images per class (all 10,000 test images) into a temporary ImageFolder
tree, trains the given cell for each kernel set with the engine's defaults and reports test accuracy
(chance is 10 %) and the time taken.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import torch

from engine.core.profiles import get_profile  # noqa: E402
from engine.core.space import Genotype, KernelSet  # noqa: E402
from engine.data.images import load_dataset  # noqa: E402
from engine.train.training import TrainConfig, train  # noqa: E402


def extract(source: Path, target: Path, train_per_class: int) -> None:
    with zipfile.ZipFile(source) as z:
        taken = defaultdict(int)
        for name in sorted(z.namelist()):
            parts = name.split("/")
            if len(parts) != 3 or not parts[2]:
                continue
            if parts[0] == "train":
                if taken[parts[1]] >= train_per_class:
                    continue
                taken[parts[1]] += 1
            out = target / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zip", type=Path)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--kernel-sets", default="1x1_3x3,3x3_5x5")
    parser.add_argument("--genotype", default="0302 0030 0003 0000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", default="laptop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default="fp32", help="comma-separated: fp32,bf16 trains each")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        extract(args.zip, Path(tmp), args.train_per_class)
        data = load_dataset(f"folder:{tmp}", named_path=True)  # a folder this script made
        print(
            f"CIFAR-10 (JPEG): {len(data.train)} training, {len(data.test)} test images; "
            f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads\n"
        )
        print(f"profile {args.profile}, device {args.device}\n")
        print(
            "| kernel set | cell | precision | epochs | test accuracy per epoch | train s | images/s |\n"
            "|---|---|---|---|---|---|---|"
        )
        for name in args.kernel_sets.split(","):
            for precision in args.precisions.split(","):
                t0 = time.perf_counter()
                result = train(
                    Genotype.from_str(args.genotype),
                    KernelSet.parse(name),
                    get_profile(args.profile),
                    data,
                    TrainConfig(epochs=args.epochs, device=args.device, precision=precision),
                )
                seconds = time.perf_counter() - t0
                accs = " / ".join(f"{e.test_accuracy:.1%}" for e in result.epochs)
                train_s = sum(e.seconds for e in result.epochs)
                print(
                    f"| {name} | `{args.genotype}` | {precision} | {args.epochs} | {accs} | {seconds:.0f} | "
                    f"{args.epochs * len(data.train) / train_s:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
