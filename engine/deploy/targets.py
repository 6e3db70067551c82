"""Does the exported model deploy on each target as it is, and if not, which of the target's rules it breaks?

Read from the NIR graph the product writes (``engine.deploy.nir``), so the report speaks of the file a user
downloads. Software targets (snntorch, spikingjelly, norse) load it through their NIR importers: their rules are
the node types each importer maps and the neuron it assumes. Speck and the other DYNAP-CNN chips, reached through
sinabs, are hardware: their rules are the chip's.

Sources of the Speck / DYNAP-CNN rules (named here so the table can be checked against them):

- sinabs' documentation, ``docs/speck/overview.md`` ("Chip Resources"): 9 DYNAP-CNN layers (cores), each a
  convolution, then integrate-and-fire neurons, then an optional sum pooling of 1x1, 2x2 or 4x4; kernels up to
  16x16; strides 1, 2, 4 or 8; padding 0 to 7; at most 1,024 channels; inputs up to 128x128; 8-bit weights; at
  most 2 destination layers per layer (fan-out 2); kernel memory per layer ``c * 2^(ceil(log2(kx*ky)) +
  ceil(log2 f))`` entries and neuron memory ``f * fx * fy`` entries;
- sinabs' FAQ, ``docs/source/faqs/available_network_arch.md``: the operations are Conv2d, AvgPool, SumPool,
  Linear, Flatten and the IAF activation; several layers may feed one (events merge at its input);
- sinabs, ``sinabs/backend/dynapcnn/chips/dynapcnn.py`` (``get_constraints``): kernel memory per layer 16, 16,
  16, 32, 32, 64, 64, 16, 16 Ki entries, neuron memory 64, 64, 64, 32, 32, 16, 16, 16, 16 Ki entries, 1 Ki
  biases; each network layer takes a core of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SPECK_SOURCE = (
    "sinabs docs/speck/overview.md (Chip Resources), docs/source/faqs/available_network_arch.md and "
    "sinabs/backend/dynapcnn/chips/dynapcnn.py (get_constraints)"
)
SPECK_KERNEL_MEMORY = (16, 16, 16, 32, 32, 64, 64, 16, 16)  # Ki entries per core, cores 0 to 8
SPECK_NEURON_MEMORY = (64, 64, 64, 32, 32, 16, 16, 16, 16)  # Ki entries per core
SPECK_BIASES = 1024
SPECK_MAX_CHANNELS, SPECK_MAX_KERNEL, SPECK_MAX_INPUT, SPECK_MAX_PADDING = 1024, 16, 128, 7
SPECK_STRIDES, SPECK_POOLS, SPECK_FANOUT = (1, 2, 4, 8), (1, 2, 4), 2
KI = 1024

# The node types the importers map (nir 1.0.8; snntorch 1.0.0, spikingjelly 2.0.0, norse 1.1.0, sinabs): the same
# set for each, and the only ones the export writes besides Input and Output.
MAPPED = frozenset({"Input", "Output", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten", "Affine", "Linear", "LIF", "IF"})
HOW = {
    "snntorch": "from snntorch.import_nir import import_from_nir; net = import_from_nir(nir.read(path))",
    "spikingjelly": "from spikingjelly.activation_based.nir_exchange import import_from_nir; "
    "net = import_from_nir(nir.read(path))",
    "norse": "import norse.torch; net = norse.torch.from_nir(nir.read(path), dt=1e-4)",
    "speck": "sinabs: from sinabs.backend.dynapcnn import DynapcnnNetwork (after sinabs.from_nir)",
}
NOTES = {
    "snntorch": "its importer assumes dt = 0.1 ms, the step the file is written for; its Flatten also flattens "
    "the batch: run one image at a time",
    "spikingjelly": "its importer assumes dt = 0.1 ms, the step the file is written for",
    "norse": "pass dt=1e-4 (the step the file is written for); its Flatten also flattens the batch: run one "
    "image at a time; norse's node mapping run by nirtorch in graph order runs every graph (README, NIR)",
    "speck": "a chip: weights as 8-bit integers (the int8 export), inputs as events",
}


@dataclass(frozen=True)
class Rule:
    rule: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class TargetReport:
    target: str
    rules: list[Rule]
    how: str
    note: str
    source: str = ""
    deploys: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "deploys", all(r.ok for r in self.rules))

    @property
    def broken(self) -> list[Rule]:
        return [r for r in self.rules if not r.ok]


def _kind(node) -> str:
    return type(node).__name__


def _lifs(graph) -> dict:
    return {name: node for name, node in graph.nodes.items() if _kind(node) == "LIF"}


def _neurons(graph) -> dict:
    """Every spiking layer: LIF, and IF (integrate-and-fire, no leak)."""
    return {name: node for name, node in graph.nodes.items() if _kind(node) in ("LIF", "IF")}


def _plain_lif(graph) -> Rule:
    """Every LIF with r = 1, v_leak = 0, v_reset = 0: what the importers assume of a LIF."""
    bad = [
        name
        for name, node in _lifs(graph).items()
        if not (np.all(node.r == 1) and np.all(node.v_leak == 0) and np.all(getattr(node, "v_reset", 0) == 0))
    ]
    detail = "every LIF has r = 1, v_leak = 0, v_reset = 0" if not bad else f"not plain: {', '.join(bad[:4])}"
    return Rule("plain LIF neurons (r = 1, v_leak = 0, v_reset = 0)", not bad, detail)


def _software(graph, target: str) -> TargetReport:
    unmapped = sorted({_kind(n) for n in graph.nodes.values()} - MAPPED)
    uniform = all(np.unique(np.asarray(node.tau)).size == 1 for node in _lifs(graph).values())
    rules = [
        Rule(
            "every node type is mapped by the importer",
            not unmapped,
            "Conv2d, SumPool2d, Flatten, Linear/Affine and LIF only" if not unmapped else f"unmapped: {unmapped}",
        ),
        _plain_lif(graph),
        Rule(
            "one time constant per LIF layer",
            uniform,
            "tau is uniform within each layer" if uniform else "a layer has neurons with different tau",
        ),
    ]
    if target == "norse":  # its from_nir executor (nirtorch's deprecated GraphExecutor) orders nodes depth first
        joins = sorted({dst for _, dst in graph.edges if sum(d == dst for _, d in graph.edges) > 1})
        rules.append(
            Rule(
                "no node fed by parallel branches (from_nir runs nodes depth first, a sum before its inputs)",
                not joins,
                "none" if not joins else f"{len(joins)} node(s) sum branches ({', '.join(joins[:3])})",
            )
        )
    return TargetReport(target, rules, HOW[target], NOTES[target])


# ------------------------------------------------------------------------------------------ Speck


@dataclass(frozen=True)
class _Layer:
    """One network layer as a DYNAP-CNN core would hold it: a convolution (a Linear is one over its whole
    input) into a neuron population."""

    name: str
    channels_in: int
    channels_out: int
    kernel: tuple[int, int]
    neurons: int

    @property
    def kernel_memory(self) -> int:
        kx, ky = self.kernel
        return self.channels_in * 2 ** (math.ceil(math.log2(kx * ky)) + math.ceil(math.log2(self.channels_out)))


def _layers(graph) -> list[_Layer]:
    """Each Conv2d and Linear/Affine node as a core's layer, with what its neurons hold."""
    layers = []
    for name, node in graph.nodes.items():
        kind = _kind(node)
        if kind == "Conv2d":
            f, c, kh, kw = node.weight.shape
            h, w = (int(v) for v in node.input_shape)
            (sh, sw), (ph, pw) = (tuple(int(v) for v in node.stride), tuple(int(v) for v in node.padding))
            fy, fx = (h - kh + 2 * ph) // sh + 1, (w - kw + 2 * pw) // sw + 1
            layers.append(_Layer(name, c, f, (kw, kh), f * fx * fy))
        elif kind in ("Linear", "Affine"):
            out, inputs = node.weight.shape
            shape = _flattened_shape(graph, name)
            c, h, w = shape if shape is not None else (inputs, 1, 1)
            layers.append(_Layer(name, c, out, (w, h), out))
    return layers


def _flattened_shape(graph, name: str) -> tuple[int, int, int] | None:
    """The (C, H, W) a Flatten before ``name`` flattened: a Linear on it is a convolution over that input."""
    for src, dst in graph.edges:
        if dst == name and _kind(graph.nodes[src]) == "Flatten":
            shape = np.asarray(graph.nodes[src].input_type["input"]).tolist()
            return tuple(int(v) for v in shape) if len(shape) == 3 else None
    return None


def _assign(layers: list[_Layer]) -> dict[str, int] | None:
    """A core for every layer, each core's kernel and neuron memory holding its layer's (augmenting paths over
    the 9 cores); None when no assignment exists."""
    fits = {
        layer.name: [
            core
            for core in range(len(SPECK_KERNEL_MEMORY))
            if layer.kernel_memory <= SPECK_KERNEL_MEMORY[core] * KI and layer.neurons <= SPECK_NEURON_MEMORY[core] * KI
        ]
        for layer in layers
    }
    owner: dict[int, str] = {}

    def place(name: str, seen: set[int]) -> bool:
        for core in fits[name]:
            if core not in seen:
                seen.add(core)
                if core not in owner or place(owner[core], seen):
                    owner[core] = name
                    return True
        return False

    if len(layers) > len(SPECK_KERNEL_MEMORY) or not all(place(layer.name, set()) for layer in layers):
        return None
    return {name: core for core, name in owner.items()}


def _speck(graph) -> TargetReport:
    nodes = graph.nodes
    layers = _layers(graph)
    neurons = _neurons(graph)
    leaky = [name for name, node in _lifs(graph).items() if np.all(np.isfinite(node.tau))]
    rules = [
        Rule(
            "integrate-and-fire neurons without leak (IAF)",
            not leaky,
            "no LIF leaks" if not leaky else f"{len(leaky)} LIF layer(s) leak (tau = 4/3 timestep)",
        )
    ]
    other = sorted({_kind(n) for n in nodes.values()} - MAPPED)
    rules.append(
        Rule(
            "Conv2d, sum pooling, Linear, Flatten and spiking neurons only",
            not other,
            "nothing else" if not other else f"also {', '.join(other)}",
        )
    )
    layer_names = {layer.name for layer in layers}
    feeding = {name: sum(dst == name and src in layer_names for src, dst in graph.edges) for name in neurons}
    summed = {name: n for name, n in feeding.items() if n > 1}
    rules.append(
        Rule(
            "each neuron layer fed by one convolution (a core's input merges events, not weighted sums)",
            not summed,
            "one each"
            if not summed
            else f"{len(summed)} neuron layer(s) sum several convolutions ({', '.join(list(summed)[:3])})",
        )
    )
    bare = [layer.name for layer in layers if not all(dst in neurons for src, dst in graph.edges if src == layer.name)]
    rules.append(
        Rule(
            "each convolution or linear layer drives spiking neurons (a core is a convolution and its neurons)",
            not bare,
            "each does" if not bare else f"{len(bare)} feed something else ({', '.join(bare[:3])})",
        )
    )
    rules.append(
        Rule(
            f"at most {len(SPECK_KERNEL_MEMORY)} layers (one core each)",
            len(layers) <= len(SPECK_KERNEL_MEMORY),
            f"{len(layers)} convolution and linear layers",
        )
    )
    fanout = {name: sum(src == name for src, _ in graph.edges) for name in neurons}
    wide = {name: n for name, n in fanout.items() if n > SPECK_FANOUT}
    rules.append(
        Rule(
            f"each layer feeds at most {SPECK_FANOUT} layers",
            not wide,
            f"largest fan-out {max(fanout.values(), default=0)}"
            + (f" ({', '.join(f'{k}: {v}' for k, v in list(wide.items())[:3])})" if wide else ""),
        )
    )
    pools = [tuple(int(v) for v in np.atleast_1d(n.kernel_size)) for n in nodes.values() if _kind(n) == "SumPool2d"]
    bad_pools = sorted({p for p in pools if any(k not in SPECK_POOLS for k in p)})
    rules.append(
        Rule("sum pooling of 1x1, 2x2 or 4x4", not bad_pools, f"pools {sorted(set(pools))}" if pools else "no pool")
    )
    convs = [n for n in nodes.values() if _kind(n) == "Conv2d"]
    rules.append(
        Rule(
            f"kernels up to {SPECK_MAX_KERNEL}x{SPECK_MAX_KERNEL}, strides {SPECK_STRIDES}, padding up to "
            f"{SPECK_MAX_PADDING}",
            all(
                max(n.weight.shape[2:]) <= SPECK_MAX_KERNEL
                and all(int(s) in SPECK_STRIDES for s in n.stride)
                and max(int(p) for p in n.padding) <= SPECK_MAX_PADDING
                for n in convs
            ),
            f"largest kernel {max((max(n.weight.shape[2:]) for n in convs), default=0)}",
        )
    )
    widest = max((max(layer.channels_in, layer.channels_out) for layer in layers), default=0)
    rules.append(Rule(f"at most {SPECK_MAX_CHANNELS} channels", widest <= SPECK_MAX_CHANNELS, f"widest {widest}"))
    largest_input = max((max(int(v) for v in n.input_shape) for n in convs), default=0)
    rules.append(
        Rule(
            f"inputs up to {SPECK_MAX_INPUT}x{SPECK_MAX_INPUT}",
            largest_input <= SPECK_MAX_INPUT,
            f"largest {largest_input}x{largest_input}",
        )
    )
    biggest_kernel = max(layers, key=lambda layer: layer.kernel_memory, default=None)
    biggest_neurons = max(layers, key=lambda layer: layer.neurons, default=None)
    if biggest_kernel is not None:
        rules.append(
            Rule(
                f"kernel memory of a layer at most {max(SPECK_KERNEL_MEMORY)} Ki entries",
                biggest_kernel.kernel_memory <= max(SPECK_KERNEL_MEMORY) * KI,
                f"largest {biggest_kernel.kernel_memory / KI:g} Ki ({biggest_kernel.name})",
            )
        )
        rules.append(
            Rule(
                f"neuron memory of a layer at most {max(SPECK_NEURON_MEMORY)} Ki entries",
                biggest_neurons.neurons <= max(SPECK_NEURON_MEMORY) * KI,
                f"largest {biggest_neurons.neurons / KI:g} Ki ({biggest_neurons.name})",
            )
        )
        biases = max(layer.channels_out for layer in layers)
        rules.append(Rule(f"at most {SPECK_BIASES} biases per layer", biases <= SPECK_BIASES, f"largest {biases}"))
        assignment = _assign(layers)
        rules.append(
            Rule(
                "every layer fits a core of its own (kernel and neuron memory per core)",
                assignment is not None,
                "assigned" if assignment else "no assignment of layers to the 9 cores fits their memories",
            )
        )
    return TargetReport("speck", rules, HOW["speck"], NOTES["speck"], SPECK_SOURCE)


def deploy_report(graph) -> list[TargetReport]:
    """For each target, whether the NIR ``graph`` deploys as it is, and the rules it keeps or breaks."""
    return [_software(graph, target) for target in ("snntorch", "spikingjelly", "norse")] + [_speck(graph)]
