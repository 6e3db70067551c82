"""Training throughput: the engine's sequence network against the same network stepped with snntorch.

    python bench/bench_train.py                        # CPU: engine vs snntorch.Leaky, laptop profile
    python bench/bench_train.py --device cuda --paper --bf16  # GPU: paper profile, and bf16 against fp32

Engine: every layer sees all T timesteps at once (time folded into the batch), LIF loops over T inside.
snntorch: the usual way, the whole network stepped T times with torch.nn's layers (``nn.BatchNorm2d``,
``nn.AvgPool2d``) and ``snntorch.Leaky`` neurons holding their membrane between steps (beta 0.25 fed 0.75 x,
zero reset, ATan surrogate: the same dynamics). A second stepped network runs the engine's own layers one
timestep per call (the comparison of earlier rounds), to show what they alone give a stepped network. All are timed side by side in one run on the same weights and batches: forward, backward, SGD step.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.profiles import get_profile
from engine.core.space import Genotype, KernelSet
from engine.data import dataset_shape
from engine.nn import fused
from engine.nn.devices import keep_freed_memory
from engine.nn.layers import SeqAvgPool2d, SeqBatchNorm2d
from engine.nn.network import SpikingNet, build_network


class SteppedLeaky(nn.Module):
    """snntorch's Leaky for one timestep per call; membrane kept until ``reset``."""

    def __init__(self, v_th: float = 1.0, fanout: int = 1) -> None:
        import snntorch  # only the CPU comparison needs it
        from snntorch import surrogate

        super().__init__()
        self.fanout = fanout
        self.leaky = snntorch.Leaky(beta=0.25, threshold=v_th, reset_mechanism="zero", spike_grad=surrogate.atan(2.0))
        self.mem = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mem is None:
            self.mem = self.leaky.init_leaky()
        spk, self.mem = self.leaky(0.75 * x, self.mem)
        return spk


def plain_step(layer: type[nn.Module]) -> type[nn.Module]:
    """``layer`` as torch.nn ships it, on one timestep ``[1, B, ...]`` per call, as a stepped network runs it."""

    class Step(layer):
        def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
            return layer.forward(self, x.flatten(0, 1)).unflatten(0, x.shape[:2])

    return Step


# The engine's layers that do more than torch.nn's per call (per-timestep statistics, fused backwards).
PLAIN = {SeqBatchNorm2d: plain_step(nn.BatchNorm2d), SeqAvgPool2d: plain_step(nn.AvgPool2d)}


def step_through_time(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for m in net.modules():
        if isinstance(m, SteppedLeaky):
            m.mem = None
    return torch.stack([net(x[t : t + 1]) for t in range(x.shape[0])]).mean(0)


def trainer(net, x, y, forward):
    """One SGD step of ``net`` on ``(x, y)`` per call."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = F.cross_entropy(forward(net, x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def side_by_side(steps: dict, batch: int, rounds: int, per_round: int) -> dict:
    """Images/s of each trainer, timed in alternating rounds (load drifts; the median round is reported)."""
    for step in steps.values():
        step()  # warm-up: allocator, oneDNN primitives, compiled kernels
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(per_round):
                step()
            sync()
            times[name].append((time.perf_counter() - t0) / per_round)
    return {name: batch / statistics.median(t) for name, t in times.items()}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paper", action="store_true", help="the paper profile (a GPU's scale)")
    parser.add_argument("--bf16", action="store_true", help="also the engine under bf16 autocast")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    parser.add_argument("--steps", type=int, default=2, help="training steps per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    keep_freed_memory()  # as engine.train.training does; both networks run in this process
    genotype, shape = Genotype.from_str("0302 0030 0003 0000"), dataset_shape("cifar10")
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}"
    )
    print(f"command: python bench/bench_train.py {' '.join(f'--{k} {v}' for k, v in vars(args).items())}\n")
    print("| network | kernel set | engine img/s | comparison | img/s | ratio |\n|---|---|---|---|---|---|")
    for ks in (KernelSet(1, 3), KernelSet(3, 5)):
        profile = get_profile("paper" if args.paper else "laptop")
        torch.manual_seed(0)
        x = torch.rand(profile.timesteps, args.batch, 3, 32, 32, device=device).bernoulli()
        y = torch.randint(0, 10, (args.batch,), device=device)
        ours = build_network(genotype, ks, profile, shape, device=device)
        trainers = {"engine": trainer(ours, x, y, lambda n, v: n(v))}
        for label, plain in (
            ("snntorch.Leaky + torch.nn layers stepped", True),
            ("snntorch.Leaky + engine layers stepped", False),
        ):
            # snntorch neurons cannot be built on the meta device that build_network uses.
            stepped = SpikingNet(genotype, ks, dataclasses.replace(profile, timesteps=1), shape, neuron=SteppedLeaky)
            for m in stepped.modules():
                if plain and type(m) in PLAIN:
                    m.__class__ = PLAIN[type(m)]
            stepped = stepped.to(device, memory_format=torch.channels_last)
            stepped.load_state_dict(ours.state_dict(), strict=False)  # snntorch keeps its constants as buffers
            trainers[label] = trainer(stepped, x, y, step_through_time)
        if args.bf16:
            bf16_net = build_network(genotype, ks, profile, shape, device=device)
            bf16_net.load_state_dict(ours.state_dict())

            def bf16(n, v):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return n(v).float()

            trainers["engine bf16 autocast"] = trainer(bf16_net, x, y, bf16)
        speed = side_by_side(trainers, args.batch, args.rounds, args.steps)
        engine = speed.pop("engine")
        for label, theirs in speed.items():
            print(f"| {profile.name} | {ks} | {engine:.0f} | {label} | {theirs:.0f} | {engine / theirs:.2f}x |")
    print(f"\nfused kernels: {fused.MODE} mode, {fused.compile_seconds:.1f} s compiling (included in the warm-up)")


if __name__ == "__main__":
    main()
