"""The spiking macro network, built from (genotype, space, profile, dataset).

    stem: Conv3x3 + BN                      (once for direct encoding, per timestep for rate encoding)
    cell 1 at width C
    down: BN -> LIF -> Conv3x3(C->2C) -> BN -> AvgPool2d(2)
    cell 2 at width 2C
    head: BN -> LIF -> AvgPool2d(pool) -> Dropout -> Linear(->hidden) -> LIF -> Linear(->classes*group)
    readout: mean over each class's group of output neurons, then over time

Both cells share the genotype, with their own weights. Zeroize edges build nothing and cost nothing. In a
space of raw cells (SpikeNAS-Bench's) a node that nothing feeds holds zeros, as the benchmark's ``x * 0``
does, and edges leaving it are built and counted all the same.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.core.footprint import DataShape, head_features, stem_stride
from engine.core.profiles import Profile
from engine.core.space import Genotype, OpKind, OpSpec, Space
from engine.nn.layers import SeqAvgPool2d, SeqBatchNorm2d, SeqConv2d, SeqDropout, to_channels_last
from engine.nn.neuron import LIF


class ConvBN(nn.Sequential):
    """The conv half of a conv op (the LIF before it belongs to the cell node feeding it)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            SeqConv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            SeqBatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm = self
        return norm(conv(x), overwrite=True)  # the conv's output is read by nothing else


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def make_op(op: OpSpec, channels: int, pool_counts_padding: bool = False) -> nn.Module:
    if op.is_conv:
        return ConvBN(channels, channels, op.kernel)
    if op.kind is OpKind.SKIP:
        return Identity()
    if op.kind is OpKind.AVGPOOL:
        return SeqAvgPool2d(op.kernel, stride=1, padding=op.kernel // 2, count_include_pad=pool_counts_padding)
    raise ValueError(f"op {op.label} builds no module")


def fire_key(src: int, threshold: float) -> str:
    """The name of the LIF in front of ``src``'s convolutions of this threshold: ``"0"`` at threshold 1,
    ``"0at0p5"`` at 0.5 (no underscore or dot: NIR node names are built from it)."""
    return str(src) if threshold == 1.0 else f"{src}at{threshold:g}".replace(".", "p")


class Cell(nn.Module):
    """SNASNet forward cell: ``x1 = e01(x0)``, ``x2 = e02(x0) + e12(x1)``, ``x3 = e03(x0) + e13(x1) + e23(x2)``."""

    def __init__(
        self,
        genotype: Genotype,
        space: Space,
        channels: int,
        neuron: type[nn.Module] = LIF,
        pool_counts_padding: bool = False,
    ):
        super().__init__()
        self.edges = [(s, d, space.op(code)) for s, d, code in genotype.edges]
        self.ops = nn.ModuleDict({f"{s}{d}": make_op(op, channels, pool_counts_padding) for s, d, op in self.edges})
        fanout: dict[str, tuple[float, int]] = {}
        self.last_read: dict[int, int] = {}  # the last node each node feeds: after it, the node can go
        for s, d, op in self.edges:
            if op.is_conv:
                key = fire_key(s, op.threshold)
                fanout[key] = (op.threshold, fanout.get(key, (0, 0))[1] + 1)
            self.last_read[s] = max(self.last_read.get(s, d), d)
        # Every conv op starts with its own LIF; those fed by the same node with the same threshold fire
        # identically, so each (node, threshold) fires once and its spikes feed all of those conv edges.
        self.fire = nn.ModuleDict({key: neuron(v_th=th, fanout=n) for key, (th, n) in fanout.items()})

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = [x0]
        spikes: dict[str, torch.Tensor] = {}
        for dst in (1, 2, 3):
            total, owned = None, False  # owned: ``total`` is a fresh tensor this node may add into in place
            for s, d, op in self.edges:
                if d != dst:
                    continue
                x = nodes[s] if nodes[s] is not None else x0.new_zeros(x0.shape)  # a raw cell's unfed node
                if op.is_conv:
                    key = fire_key(s, op.threshold)
                    if key not in spikes:
                        spikes[key] = self.fire[key](x)
                    x = spikes[key]
                y = self.ops[f"{s}{d}"](x)
                if total is None:
                    total, owned = y, op.kind is not OpKind.SKIP
                elif owned:
                    total.add_(y)  # no backward reads a conv's or pool's output, so this is safe
                else:
                    total, owned = total + y, True
            nodes.append(total)  # None for a node nothing feeds
            for s, last in self.last_read.items():
                if last == dst:  # nothing reads node s any more: let its values and spikes go
                    nodes[s] = None
                    for key in [k for k in spikes if k.split("at")[0] == str(s)]:
                        del spikes[key]
        return nodes[3] if nodes[3] is not None else x0.new_zeros(x0.shape)


class SpikingNet(nn.Module):
    def __init__(
        self,
        genotype: Genotype,
        kernel_set: Space,
        profile: Profile,
        data: DataShape,
        neuron: type[nn.Module] = LIF,
    ) -> None:
        super().__init__()
        macro = profile.macro(data.macro)
        c = macro.channels
        self.timesteps = profile.timesteps
        self.num_classes = data.num_classes
        self.group = macro.group
        self.linear_gain = profile.linear_gain
        self.stem = ConvBN(3, c, 3, stride=stem_stride(data.image_size))
        self.cell1 = Cell(genotype, kernel_set, c, neuron, profile.pool_counts_padding)
        self.down = nn.Sequential(SeqBatchNorm2d(c), neuron(), ConvBN(c, 2 * c, 3), SeqAvgPool2d(2))
        self.cell2 = Cell(genotype, kernel_set, 2 * c, neuron, profile.pool_counts_padding)
        self.head = nn.Sequential(
            SeqBatchNorm2d(2 * c),
            neuron(),
            SeqAvgPool2d(macro.pool),
            SeqDropout(profile.dropout),
            nn.Flatten(2),
            nn.Linear(head_features(macro, data.image_size), macro.hidden, bias=False),
            neuron(),
            nn.Linear(macro.hidden, data.num_classes * macro.group),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor, *, step: bool = False) -> torch.Tensor:
        """``x``: encoded input ``[T, B, 3, H, W]``, or ``[1, B, 3, H, W]`` for a static (direct) input.

        Returns class scores ``[B, classes]``: output neurons averaged per class group and over time.
        With ``step``, ``x`` is one timestep of a sequence fed a step per call (``stepping``).
        """
        h = self.stem(to_channels_last(x))
        if h.shape[0] == 1 and not step:
            h = h.expand(self.timesteps, *h.shape[1:])
        h = self.cell2(self.down(self.cell1(h)))
        out = self.head(h)
        return out.unflatten(-1, (self.num_classes, self.group)).mean(dim=(-1, 0))


@torch.no_grad()
def init_weights(net: SpikingNet) -> None:
    """SNASNet's init: convs kaiming-uniform (a=2), BN (1, 0), linear N(0, 0.01) with zero bias.

    With a ``linear_gain`` (reduced profiles), linear weights are N(0, gain / sqrt(fan_in)) instead. The
    classifier's inputs are pooled spikes with small values (firing rates near 0.1), and at reduced width
    N(0, 0.01) keeps its neuron far below threshold: it never fires, so training barely moves it (the
    loss stays at chance for epochs) and the search score mostly counts conv edges. A gain of 9 puts some
    of its membranes over the threshold at initialisation (README, "The score at reduced scale").
    """
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, a=2)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
        elif isinstance(m, nn.Linear):
            std = 0.01 if net.linear_gain is None else net.linear_gain / m.in_features**0.5
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_network(
    genotype: Genotype,
    kernel_set: Space,
    profile: Profile,
    data: DataShape,
    *,
    device: torch.device | str = "cpu",
    neuron: type[nn.Module] = LIF,
) -> SpikingNet:
    """Build straight on ``device`` with one initialisation (no default init thrown away), channels-last."""
    with torch.device("meta"):
        net = SpikingNet(genotype, kernel_set, profile, data, neuron)
    net = net.to_empty(device=device).to(memory_format=torch.channels_last)
    init_weights(net)
    return net


def stepping(net: nn.Module, on: bool, *, keep_potentials: bool = False) -> None:
    """Neurons and dropout keep their state from one call to the next (a sequence fed one timestep per
    call, in a fifth of the memory) or not. A new sequence starts: dropout masks are dropped, and the
    neurons' membrane potentials too unless ``keep_potentials``."""
    for m in net.modules():
        if isinstance(m, (LIF, SeqDropout)):
            m.carry = on
        if isinstance(m, LIF) and not keep_potentials:
            m.v = None
        elif isinstance(m, SeqDropout):
            m.mask = None


def trainable_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def spike_layers(net: nn.Module) -> list[LIF]:
    return [m for m in net.modules() if isinstance(m, LIF)]
