"""Training throughput: the engine's sequence network against the same network stepped with snntorch.

    python bench/bench_train.py                        # CPU: engine vs snntorch.Leaky, laptop profile
    python bench/bench_train.py --device cuda --paper  # GPU: paper profile, fp32 vs bf16

Engine: every layer sees all T timesteps at once (time folded into the batch), LIF loops over T inside.
snntorch: the usual way, the whole network stepped T times with ``snntorch.Leaky`` neurons holding their
membrane between steps (beta 0.25 fed 0.75 x, zero reset, ATan surrogate: the same dynamics).
Both are timed side by side in one run on the same weights and batches: forward, backward, SGD step.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn

from engine.data import dataset_shape
from engine.network import SpikingNet, build_network
from engine.profiles import get_profile
from engine.space import Genotype, KernelSet


class SteppedLeaky(nn.Module):
    """snntorch's Leaky for one timestep per call; membrane kept until ``reset``."""

    def __init__(self, fanout: int = 1) -> None:
        import snntorch  # only the CPU comparison needs it
        from snntorch import surrogate

        super().__init__()
        self.fanout = fanout
        self.leaky = snntorch.Leaky(beta=0.25, threshold=1.0, reset_mechanism="zero", spike_grad=surrogate.atan(2.0))
        self.mem = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mem is None:
            self.mem = self.leaky.init_leaky()
        spk, self.mem = self.leaky(0.75 * x, self.mem)
        return spk


def step_through_time(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for m in net.modules():
        if isinstance(m, SteppedLeaky):
            m.mem = None
    return torch.stack([net(x[t : t + 1]) for t in range(x.shape[0])]).mean(0)


def throughput(net, x, y, steps, forward) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = F.cross_entropy(forward(net, x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * x.shape[1] / (time.perf_counter() - t0)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paper", action="store_true", help="paper profile, fp32 vs bf16 (GPU)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    genotype, shape = Genotype.from_str("0302 0030 0003 0000"), dataset_shape("cifar10")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")  # fmt: skip
    print(f"command: python bench/bench_train.py {' '.join(f'--{k} {v}' for k, v in vars(args).items())}\n")
    print("| network | kernel set | engine img/s | comparison | img/s | ratio |\n|---|---|---|---|---|---|")
    for ks in (KernelSet(1, 3), KernelSet(3, 5)):
        profile = get_profile("paper" if args.paper else "laptop")
        torch.manual_seed(0)
        x = torch.rand(profile.timesteps, args.batch, 3, 32, 32, device=device).bernoulli()
        y = torch.randint(0, 10, (args.batch,), device=device)
        ours = build_network(genotype, ks, profile, shape, device=device)
        if args.paper:
            fp32 = throughput(ours, x, y, args.steps, lambda n, v: n(v))

            def bf16(n, v):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return n(v).float()

            other, label = throughput(ours, x, y, args.steps, bf16), "engine bf16 autocast"
            print(f"| {profile.name} | {ks} | {fp32:.0f} | {label} | {other:.0f} | {other / fp32:.2f}x bf16/fp32 |")
            continue
        # snntorch neurons cannot be built on the meta device that build_network uses.
        stepped = SpikingNet(genotype, ks, dataclasses.replace(profile, timesteps=1), shape, neuron=SteppedLeaky)
        stepped = stepped.to(device, memory_format=torch.channels_last)
        stepped.load_state_dict(ours.state_dict(), strict=False)  # snntorch keeps its constants as buffers
        engine = throughput(ours, x, y, args.steps, lambda n, v: n(v))
        theirs = throughput(stepped, x, y, args.steps, step_through_time)
        print(f"| {profile.name} | {ks} | {engine:.0f} | snntorch.Leaky stepped | {theirs:.0f} | {engine / theirs:.2f}x |")


if __name__ == "__main__":
    main()
