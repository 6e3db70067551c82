"""A straightforward re-implementation of SNASNet's training-free scoring, as the original does it.

This is the *baseline* that ``bench_search.py`` measures the engine against. It is written from the
description in ``shared/reference/snasnet.md`` (no code of SNASNet's repository is used) and keeps every
habit of the original that costs time:

* single-step mode: the network is a module stepped ``T`` times per batch (``for t: out = net.step(x_t)``),
  so every convolution and batch norm runs on one timestep (``B`` images) at a time;
* one LIF module per conv op, its membrane potential a tensor attribute reset per batch:
  ``V <- V + (X - V) / tau``, fire where ``V >= 1``, hard reset to 0;
* BatchNorm2d applied per timestep, in train mode (batch statistics), dropout active;
* zeroize edges are computed as ``x * 0`` and added;
* a forward hook on every LIF computes that call's kernel right away, in float64, with TWO matmuls
  (``same = x x^T + (1 - x)(1 - x)^T``, Hamming distance ``d = N - same``), then
  ``K_ij = N - 0.5 d_ij / (N (s_i (1 - s_j) + (1 - s_i) s_j) + 1e-3)``; K is summed over hook calls,
  divided by their number, and the score is ``log |det K|``;
* a ``DataLoader`` with per-sample PIL transforms (RandomCrop(32, 4) + flip + ToTensor) is rebuilt for
  every candidate, and rate encoding draws each timestep's spikes inside the time loop.

The macro network is the one of ``engine/network.py`` (stem, cell 1, down, cell 2, head, readout), so the
weights of an engine network can be copied in (``copy_engine_weights``) and both compute on the same
weights. Zeroize edges have no weights; every other engine parameter has a counterpart here.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.profiles import Profile, ScoreConfig
from engine.core.seeds import derive_seed
from engine.core.space import EDGES, Genotype, KernelSet, OpKind
from engine.data.images import SAMPLE_ARCHIVE, DatasetInfo
from engine.nn.network import head_features, stem_stride

# ------------------------------------------------------------------------------------------- neuron


class RefLIF(nn.Module):
    """spikingjelly-style single-step LIF: state ``v`` lives on the module between calls."""

    def __init__(self, tau: float = 4 / 3, v_th: float = 1.0) -> None:
        super().__init__()
        self.tau, self.v_th = tau, v_th
        self.v: torch.Tensor | None = None

    def reset(self) -> None:
        self.v = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.v is None:
            self.v = torch.zeros_like(x)
        self.v = self.v + (x - self.v) / self.tau
        spike = (self.v >= self.v_th).to(x.dtype)
        self.v = self.v * (1.0 - spike)  # hard reset to 0 where it fired
        return spike


class RefDropout(nn.Module):
    """Dropout with one mask per sequence: drawn at the first step after a reset, reused for the rest.

    ``mask`` may be set from outside (the equality check feeds the engine's mask).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.mask: torch.Tensor | None = None

    def reset(self) -> None:
        self.mask = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.mask is None:
            self.mask = F.dropout(torch.ones_like(x), self.p, training=True)
        return x * self.mask


# ---------------------------------------------------------------------------------------------- ops


class Zeroize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


class SkipCon(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ConvOp(nn.Module):
    """A pre-activation conv op with its own neuron: LIF -> Conv2d -> BatchNorm2d."""

    def __init__(self, c: int, kernel: int) -> None:
        super().__init__()
        self.lif = RefLIF()
        self.conv = nn.Conv2d(c, c, kernel, stride=1, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.lif(x)))


def make_ref_op(code: int, kernel_set: KernelSet, c: int) -> nn.Module:
    op = kernel_set.op(code)
    if op.kind is OpKind.ZERO:
        return Zeroize()
    if op.kind is OpKind.SKIP:
        return SkipCon()
    if op.is_conv:
        return ConvOp(c, op.kernel)
    return nn.AvgPool2d(3, stride=1, padding=1)  # the original's: zero padding counted (divides by 9)


class RefCell(nn.Module):
    """All six edges are built, zeroize included (it computes ``x * 0``)."""

    def __init__(self, genotype: Genotype, kernel_set: KernelSet, c: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({f"{s}{d}": make_ref_op(o, kernel_set, c) for (s, d), o in zip(EDGES, genotype.ops)})

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        e = self.edges
        x1 = e["01"](x0)
        x2 = e["02"](x0) + e["12"](x1)
        x3 = e["03"](x0) + e["13"](x1) + e["23"](x2)
        return x3


# ------------------------------------------------------------------------------------------ network


class RefNet(nn.Module):
    """The engine's macro network in single-step form: ``step`` processes one timestep ``[B, 3, H, W]``."""

    def __init__(self, genotype: Genotype, kernel_set: KernelSet, profile: Profile, info: DatasetInfo) -> None:
        super().__init__()
        macro = profile.macro(info.macro)
        c = macro.channels
        self.timesteps = profile.timesteps
        self.num_classes, self.group = info.num_classes, macro.group
        self.stem_conv = nn.Conv2d(3, c, 3, stride=stem_stride(info.image_size), padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(c)
        self.cell1 = RefCell(genotype, kernel_set, c)
        self.down_bn = nn.BatchNorm2d(c)
        self.down_lif = RefLIF()
        self.down_conv = nn.Conv2d(c, 2 * c, 3, padding=1, bias=False)
        self.down_bn2 = nn.BatchNorm2d(2 * c)
        self.down_pool = nn.AvgPool2d(2)
        self.cell2 = RefCell(genotype, kernel_set, 2 * c)
        self.head_bn = nn.BatchNorm2d(2 * c)
        self.head_lif = RefLIF()
        self.head_pool = nn.AvgPool2d(macro.pool)
        self.head_drop = RefDropout(profile.dropout)
        self.fc1 = nn.Linear(head_features(macro, info.image_size), macro.hidden, bias=False)
        self.fc_lif = RefLIF()
        self.fc2 = nn.Linear(macro.hidden, info.num_classes * macro.group)
        self.linear_gain = getattr(profile, "linear_gain", None)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """SNASNet's init (linear N(0, 0.01)); a profile's ``linear_gain`` makes it N(0, gain/sqrt(fan_in))."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=2)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
            elif isinstance(m, nn.Linear):
                std = 0.01 if self.linear_gain is None else self.linear_gain / m.in_features**0.5
                nn.init.normal_(m.weight, 0.0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def reset(self, neurons: bool = True) -> None:
        """Start a new sequence: a new dropout mask and, unless ``neurons`` is False, neurons at rest."""
        for m in self.modules():
            if isinstance(m, RefDropout) or (neurons and isinstance(m, RefLIF)):
                m.reset()

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem_bn(self.stem_conv(x))

    def step(self, h: torch.Tensor) -> torch.Tensor:
        """One timestep from the stem's output on: returns the output neurons ``[B, classes*group]``."""
        h = self.cell1(h)
        h = self.down_pool(self.down_bn2(self.down_conv(self.down_lif(self.down_bn(h)))))
        h = self.cell2(h)
        h = self.head_drop(self.head_pool(self.head_lif(self.head_bn(h))))
        h = self.fc_lif(self.fc1(h.flatten(1)))
        return self.fc2(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[T, B, 3, H, W]`` already encoded (or ``[1, B, ...]`` static). Returns ``[B, classes]``."""
        outs = []
        static = self.stem(x[0]) if x.shape[0] == 1 else None
        for t in range(self.timesteps):
            h = static if static is not None else self.stem(x[t])
            outs.append(self.step(h))
        out = torch.stack(outs)
        return out.unflatten(-1, (self.num_classes, self.group)).mean(dim=(-1, 0))


def spiking_modules(net: nn.Module) -> list[tuple[str, RefLIF]]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, RefLIF)]


# --------------------------------------------------------------------------- engine weights -> here


def engine_to_ref_name(name: str) -> str | None:
    """Map an ``engine.nn.network.SpikingNet`` state-dict key to this network's key (None: no counterpart).

    engine: ``stem.0`` conv, ``stem.1`` BN; ``cellN.ops.<sd>.0`` conv, ``.1`` BN; ``down.0`` BN,
    ``down.2.0`` conv, ``down.2.1`` BN; ``head.0`` BN, ``head.5`` Linear, ``head.7`` Linear.
    """
    parts = name.split(".")
    table = {
        ("stem", "0"): "stem_conv",
        ("stem", "1"): "stem_bn",
        ("down", "0"): "down_bn",
        ("head", "0"): "head_bn",
        ("head", "5"): "fc1",
        ("head", "7"): "fc2",
    }
    if tuple(parts[:2]) in table:
        return ".".join([table[tuple(parts[:2])], *parts[2:]])
    if parts[:3] == ["down", "2", "0"]:
        return ".".join(["down_conv", *parts[3:]])
    if parts[:3] == ["down", "2", "1"]:
        return ".".join(["down_bn2", *parts[3:]])
    if parts[0] in ("cell1", "cell2") and parts[1] == "ops":
        sub = {"0": "conv", "1": "bn"}[parts[3]]
        return ".".join([parts[0], "edges", parts[2], sub, *parts[4:]])
    return None


@torch.no_grad()
def copy_engine_weights(engine_state: dict[str, torch.Tensor], ref: RefNet) -> None:
    """Copy every parameter and buffer of an engine network's ``state_dict`` into ``ref``.

    Raises if a key has no counterpart, or if a reference parameter is left without a value.
    """
    target = ref.state_dict()
    filled = set()
    for key, value in engine_state.items():
        ref_key = engine_to_ref_name(key)
        if ref_key is None or ref_key not in target:
            raise KeyError(f"engine key {key!r} has no counterpart in the reference network ({ref_key!r})")
        if target[ref_key].shape != value.shape:
            raise ValueError(f"{key} -> {ref_key}: shape {tuple(value.shape)} vs {tuple(target[ref_key].shape)}")
        target[ref_key].copy_(value)
        filled.add(ref_key)
    missing = set(target) - filled
    if missing:
        raise KeyError(f"reference keys not filled from the engine: {sorted(missing)}")


# ---------------------------------------------------------------------------------------- the score


class HookKernel:
    """Forward hooks on every LIF: each call's kernel, in float64, two matmuls, summed as it comes.

    ``count_silent=False`` (an engine option, not SNASNet's behaviour) skips hook calls in which no neuron fired.
    """

    def __init__(self, net: nn.Module, record_counts: bool = False, count_silent: bool = True) -> None:
        self.count_silent = count_silent
        self.K: torch.Tensor | None = None
        self.calls = 0
        self.counts: list[tuple[str, float]] | None = [] if record_counts else None
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in spiking_modules(net)]

    def _hook(self, name: str):
        def hook(_module, _inputs, out):
            x = out.flatten(1).double()
            if self.counts is not None:
                self.counts.append((name, float(x.sum())))
            if not self.count_silent and not x.any():
                return
            n = x.shape[1]
            same = x @ x.t() + (1 - x) @ (1 - x).t()
            d = n - same  # Hamming distance
            s = x.sum(1) / n
            s_i, s_j = s.unsqueeze(1), s.unsqueeze(0)
            k = n - 0.5 * d / (n * (s_i * (1 - s_j) + (1 - s_i) * s_j) + 1e-3)
            self.K = k if self.K is None else self.K + k
            self.calls += 1

        return hook

    def start_batch(self) -> None:
        self.K, self.calls = None, 0
        if self.counts is not None:
            self.counts.clear()

    def score(self) -> float:
        if self.K is None:
            return float("-inf")
        return float(torch.linalg.slogdet(self.K / self.calls)[1])

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# ----------------------------------------------------------------------------------------- the data


class SampleZip(torch.utils.data.Dataset):
    """torchvision-style dataset over the bundled CIFAR-10 sample: PIL decode + transform per item."""

    def __init__(self, archive: Path = SAMPLE_ARCHIVE, split: str = "train", transform=None) -> None:
        self.items: list[tuple[bytes, int]] = []
        with zipfile.ZipFile(archive) as z:
            names = sorted(n for n in z.namelist() if n.startswith(f"{split}/") and not n.endswith("/"))
            classes = sorted({n.split("/")[1] for n in names})
            for n in names:
                self.items.append((z.read(n), classes.index(n.split("/")[1])))
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from PIL import Image

        payload, label = self.items[i]
        img = Image.open(io.BytesIO(payload)).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, label


def train_transform(info: DatasetInfo, encoding: str):
    from torchvision import transforms

    steps = [
        transforms.RandomCrop(info.image_size, padding=info.crop_padding),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
    ]
    if encoding == "direct":
        steps.append(transforms.Normalize(info.mean, info.std))
    return transforms.Compose(steps)


# ---------------------------------------------------------------------------------------- procedure


@dataclass
class ReferenceScorer:
    """The reference procedure for one kernel set: fresh network, fresh loader, stepped network, hooks."""

    kernel_set: KernelSet
    profile: Profile
    info: DatasetInfo
    dataset: torch.utils.data.Dataset
    config: ScoreConfig
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0

    def score(self, genotype: Genotype, index: int) -> float:
        cfg, T = self.config, self.profile.timesteps
        scores = []
        for d in range(cfg.draws):
            key = (self.seed, 2, d) if cfg.shared else (self.seed, 3, index, d)
            torch.manual_seed(derive_seed(100, *key))
            net = RefNet(genotype, self.kernel_set, self.profile, self.info).to(self.device)
            net.train(cfg.train_mode)
            g = torch.Generator().manual_seed(
                derive_seed(101, *((self.seed, d) if cfg.shared else (self.seed, index, d)))
            )
            loader = torch.utils.data.DataLoader(  # rebuilt for every candidate, as the reference does
                self.dataset,
                batch_size=cfg.batch_size,
                shuffle=True,
                drop_last=True,
                generator=g,
                num_workers=self.num_workers,
            )
            hooks = HookKernel(net, count_silent=cfg.count_silent)
            net.reset()
            with torch.no_grad():
                for b, (x, _y) in enumerate(loader):
                    if b == cfg.batches:
                        break
                    net.reset(neurons=cfg.reset_between_batches)
                    hooks.start_batch()
                    x = x.to(self.device)
                    static = net.stem(x) if self.profile.encoding == "direct" else None
                    for _t in range(T):
                        h = static if static is not None else net.stem(torch.bernoulli(x.clamp(0, 1)))
                        net.step(h)
                    scores.append(hooks.score())
            hooks.remove()
            del net, loader
        return sum(scores) / len(scores)


@torch.no_grad()
def reference_batch_score(
    net: RefNet,
    x: torch.Tensor,
    *,
    reset_neurons: bool = True,
    dropout_mask: torch.Tensor | None = None,
    channels_last: bool = False,
    record_counts: bool = False,
    count_silent: bool = True,
) -> tuple[float, list[tuple[str, float]] | None]:
    """Score one already-encoded batch ``x`` ``[T, B, 3, H, W]`` (or ``[1, ...]``) with the stepped network.

    ``dropout_mask`` ``[B, C, h, w]`` replaces the mask the dropout would draw (to feed the engine's).
    Returns the batch's ``log |det K|`` and, with ``record_counts``, the spike count of each hook call.
    """
    hooks = HookKernel(net, record_counts=record_counts, count_silent=count_silent)
    try:
        net.reset(neurons=reset_neurons)
        if dropout_mask is not None:
            net.head_drop.mask = dropout_mask
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        static = net.stem(x[0].contiguous(memory_format=fmt)) if x.shape[0] == 1 else None
        for t in range(net.timesteps):
            h = static if static is not None else net.stem(x[t].contiguous(memory_format=fmt))
            net.step(h)
        return hooks.score(), hooks.counts
    finally:
        hooks.remove()


def macs_per_forward(net: RefNet, batch: int, image_size: int, encoding: str = "rate") -> int:
    """Multiply-accumulates of every conv and linear layer in one forward (T timesteps) of ``batch`` images."""
    total = 0

    def count(m, _i, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * m.in_channels * math.prod(m.kernel_size) // m.groups
        else:
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            x = torch.zeros(1 if encoding == "direct" else net.timesteps, 1, 3, image_size, image_size)
            net.reset()
            net(x)
    finally:
        for h in handles:
            h.remove()
        net.reset()
        net.train(was_training)
    return total * batch
