"""The trained model for neuromorphic hardware: NIR export, read-back into snntorch, and the spike-level check.

**NIR export** (``to_nir``, ``write_nir``). The network becomes a graph of the Neuromorphic Intermediate
Representation, written with the ``nir`` package:

- BatchNorm is folded at export (its inference statistics are the same at every timestep): into the
  convolution before it (weights scaled per output channel, its shift as the bias), or, where it stands
  right before a LIF (``down`` and ``head``), into that neuron's input resistance ``r`` and leak ``v_leak``.
- Cell nodes are sums: they become edges. Each op's output has an edge to every consumer of the node it
  feeds (a skip edge forwards its source's edges); a source reaching a consumer twice goes through a
  ``Scale`` of 2. The cell's 3x3 average pool (padding not counted) is a ``SumPool2d`` and a ``Scale`` by
  one over the number of pixels each window covers.
- The LIF ``V <- V + (X - V) / tau`` (tau = 4/3 timesteps, threshold 1, hard reset to 0) is the forward
  Euler step of NIR's ``tau dv/dt = (v_leak - v) + r I`` at the timestep ``dt`` written in the graph's
  metadata, with ``tau = 4/3 dt``. NIR fires on ``v > v_threshold``, the engine on ``V >= 1``: they differ
  only when a real-valued membrane lands exactly on the threshold.
- The metadata states the input (``encoding``: rate = one Bernoulli spike frame of pixel intensities in
  [0, 1] per timestep; direct = the normalised image at every timestep), ``timesteps``, ``dt`` and the
  readout (the output's ``group`` consecutive neurons per class averaged, then over the timesteps).

``to_snntorch`` reads such a graph back with ``nirtorch`` into snntorch modules (NIR's LIF as
``snntorch.Leaky``); ``check_nir`` runs it and the engine on the same encoded batch and compares every
spike of every LIF layer at every timestep and the class decisions.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.core.errors import InputError
from engine.core.files import atomic_path
from engine.core.footprint import stem_stride
from engine.core.seeds import seeded
from engine.core.space import OpKind
from engine.data.encoding import encode
from engine.nn.layers import SeqAvgPool2d, SeqBatchNorm2d
from engine.nn.network import Cell, ConvBN, Identity, SpikingNet, fire_key
from engine.train.checkpoint import LoadedModel, load_model

NIR_FORMAT = "spikernel-nir/1"
DT = 1e-3  # seconds per timestep in the exported graph (tau = 4/3 ms)


class DeployError(InputError):
    """A model that cannot be exported or measured as asked."""


def _loaded(model: LoadedModel | str | Path) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_model(model)


# ------------------------------------------------------------------------------------------ NIR export


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNorm as ``a * x + b`` per channel (float64)."""
    var, mean = bn.running_var.detach().double(), bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    a = gamma / torch.sqrt(var + bn.eps)
    return a.cpu().numpy(), (beta - mean * a).cpu().numpy()


class _Builder:
    """Nodes and edges of a NIR graph; ``shapes`` holds each node's output shape (without batch)."""

    def __init__(self, dtype) -> None:
        self.dtype = dtype
        self.nodes: dict = {}
        self.edges: list[tuple[str, str]] = []
        self.shapes: dict[str, tuple[int, ...]] = {}

    def add(self, name: str, node, sources: list[str], shape: tuple[int, ...]) -> str:
        import nir

        self.nodes[name], self.shapes[name] = node, tuple(shape)
        # A sum: one edge per distinct source; a source counted k times is scaled by k on its way.
        for src, k in Counter(sources).items():
            if k > 1:
                scaled = f"{src}.times{k}"
                if scaled not in self.nodes:
                    self.nodes[scaled] = nir.Scale(np.full(self.shapes[src], k, dtype=self.dtype))
                    self.shapes[scaled] = self.shapes[src]
                    self.edges.append((src, scaled))
                src = scaled
            self.edges.append((src, name))
        return name

    def array(self, values, shape=None) -> np.ndarray:
        a = np.asarray(values, dtype=np.float64)
        return (np.broadcast_to(a, shape) if shape is not None else a).astype(self.dtype)

    def conv(self, name: str, conv_bn: ConvBN, sources: list[str], shape: tuple[int, int, int]) -> str:
        import nir

        conv, bn = conv_bn[0], conv_bn[1]
        a, b = _bn_affine(bn)
        weight = conv.weight.detach().double().cpu().numpy() * a[:, None, None, None]
        if conv.bias is not None:
            b = b + a * conv.bias.detach().double().cpu().numpy()
        node = nir.Conv2d(
            input_shape=shape[1:],
            weight=self.array(weight),
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=self.array(b),
        )
        out = conv(torch.zeros(1, 1, *shape, device=conv.weight.device)).shape[2:]
        return self.add(name, node, sources, tuple(out))

    def lif(self, name: str, neuron: nn.Module, sources: list[str], shape, bn: nn.BatchNorm2d | None = None) -> str:
        import nir

        r, v_leak = np.ones(shape[:1]), np.zeros(shape[:1])
        if bn is not None:  # the BatchNorm in front of this neuron: its input current is a * x + b
            r, v_leak = _bn_affine(bn)
        per_neuron = (lambda v: v.reshape(-1, *[1] * (len(shape) - 1))) if len(shape) > 1 else (lambda v: v)
        node = nir.LIF(
            tau=self.array(neuron.tau * DT, shape),
            r=self.array(per_neuron(r), shape),
            v_leak=self.array(per_neuron(v_leak), shape),
            v_threshold=self.array(neuron.v_th, shape),
            v_reset=self.array(0.0, shape),
        )
        return self.add(name, node, sources, shape)

    def avg_pool(self, name: str, pool: nn.AvgPool2d, sources: list[str], shape) -> str:
        import nir

        k, s, p = (
            torch.nn.modules.utils._pair(v) for v in (pool.kernel_size, pool.stride or pool.kernel_size, pool.padding)
        )
        ones = torch.ones(1, 1, *shape[1:])
        counts = F.avg_pool2d(ones, k, s, p, count_include_pad=True, divisor_override=1)[0, 0]
        out = (shape[0], *counts.shape)
        if pool.count_include_pad or p == (0, 0):
            return self.add(name, nir.AvgPool2d(np.array(k), np.array(s), np.array(p)), sources, out)
        # Padding not counted: a sum over the window, divided by the pixels it covers.
        self.add(f"{name}.sum", nir.SumPool2d(np.array(k), np.array(s), np.array(p)), sources, out)
        return self.add(name, nir.Scale(self.array(1.0 / counts.double().numpy(), out)), [f"{name}.sum"], out)


def _cell(g: _Builder, prefix: str, cell: Cell, inputs: list[str], shape) -> tuple[list[str], dict[str, str]]:
    """A cell's edges; returns the sources summed into node 3 and {engine LIF name: NIR node name}."""
    sums: dict[int, list[str]] = {0: inputs}
    lifs: dict[str, str] = {}
    for s, d, op in cell.edges:
        module = cell.ops[f"{s}{d}"]
        if s not in sums:
            raise DeployError(
                f"{prefix}: edge {s}->{d} leaves node {s}, which nothing feeds (a raw cell): "
                "NIR has no constant source for it"
            )
        if op.is_conv:
            key = fire_key(s, op.threshold)
            lif = f"{prefix}.lif{key}"
            if lif not in g.nodes:
                g.lif(lif, cell.fire[key], sums[s], shape)
                lifs[f"{prefix}.fire.{key}"] = lif
            out = [g.conv(f"{prefix}.e{s}{d}", module, [lif], shape)]
        elif op.kind is OpKind.SKIP and isinstance(module, Identity):
            out = list(sums[s])
        elif op.kind is OpKind.AVGPOOL and isinstance(module, nn.AvgPool2d):
            out = [g.avg_pool(f"{prefix}.e{s}{d}", module, sums[s], shape)]
        else:
            raise DeployError(f"{prefix}: edge {s}->{d} ({op.label}) has no NIR mapping")
        sums.setdefault(d, []).extend(out)
    return sums[3], lifs


def _check_layout(net: SpikingNet) -> None:
    expected = [
        (net.down[0], SeqBatchNorm2d),
        (net.down[2], ConvBN),
        (net.down[3], SeqAvgPool2d),
        (net.head[0], SeqBatchNorm2d),
        (net.head[2], SeqAvgPool2d),
        (net.head[5], nn.Linear),
        (net.head[7], nn.Linear),
    ]
    if len(net.head) != 8 or not all(isinstance(m, t) for m, t in expected):
        raise DeployError("this network's layout is not the one the NIR exporter knows")


def _build(loaded: LoadedModel, dtype) -> tuple[object, dict[str, str]]:
    import nir

    net = loaded.model
    _check_layout(net)
    size, c = loaded.data.image_size, net.stem[0].out_channels
    g = _Builder(dtype)
    g.add("input", nir.Input(input_type=np.array([3, size, size])), [], (3, size, size))
    side = size // stem_stride(size)
    stem = g.conv("stem", net.stem, ["input"], (3, size, size))
    out1, lifs = _cell(g, "cell1", net.cell1, [stem], (c, side, side))
    g.lif("down.lif", net.down[1], out1, (c, side, side), bn=net.down[0])
    g.conv("down.conv", net.down[2], ["down.lif"], (c, side, side))
    pooled = g.avg_pool("down.pool", net.down[3], ["down.conv"], (2 * c, side, side))
    out2, lifs2 = _cell(g, "cell2", net.cell2, [pooled], g.shapes[pooled])
    g.lif("head.lif", net.head[1], out2, g.shapes[pooled], bn=net.head[0])
    head_pool = g.avg_pool("head.pool", net.head[2], ["head.lif"], g.shapes[pooled])
    features = int(np.prod(g.shapes[head_pool]))
    # NIR's types leave the batch out: the flatten starts at the first dimension of one sample.
    g.add(
        "head.flatten",
        nir.Flatten(input_type={"input": np.array(g.shapes[head_pool])}, start_dim=0, end_dim=-1),
        [head_pool],
        (features,),
    )
    fc1, fc2 = net.head[5], net.head[7]
    if fc1.bias is not None:
        g.add(
            "head.fc1",
            nir.Affine(g.array(fc1.weight.detach().cpu()), g.array(fc1.bias.detach().cpu())),
            ["head.flatten"],
            (fc1.out_features,),
        )
    else:
        g.add("head.fc1", nir.Linear(g.array(fc1.weight.detach().cpu())), ["head.flatten"], (fc1.out_features,))
    g.lif("head.lif2", net.head[6], ["head.fc1"], (fc1.out_features,))
    bias = fc2.bias.detach().cpu() if fc2.bias is not None else torch.zeros(fc2.out_features)
    g.add("head.fc2", nir.Affine(g.array(fc2.weight.detach().cpu()), g.array(bias)), ["head.lif2"], (fc2.out_features,))
    g.add("output", nir.Output(output_type=np.array([fc2.out_features])), ["head.fc2"], (fc2.out_features,))
    names = {**lifs, **lifs2, "down.1": "down.lif", "head.1": "head.lif", "head.6": "head.lif2"}
    return g, names


def nir_metadata(loaded: LoadedModel) -> dict:
    """What a consumer needs beyond the graph: input encoding, timestep, readout (flat: NIR's files keep
    one level of metadata)."""
    info, meta = loaded.data, loaded.meta
    encoding = loaded.profile.encoding
    model = {
        "genotype": meta.get("genotype"),
        "kernel_set": meta.get("kernel_set"),
        "setting": meta.get("setting"),
        "dataset": info.name,
        "accuracy": meta.get("accuracy"),
        "profile": loaded.profile.name,
    }
    return {
        "format": NIR_FORMAT,
        "dt": DT,
        "timesteps": int(loaded.profile.timesteps),
        "encoding": encoding,
        "encoding_description": (
            "rate: at every timestep, each pixel of the RGB image scaled to [0, 1] spikes with probability "
            "equal to its intensity (one Bernoulli frame per timestep, no normalisation)"
            if encoding == "rate"
            else "direct: the image scaled to [0, 1], normalised per channel ((x - mean) / std), fed unchanged "
            "at every timestep"
        ),
        "input_shape": json.dumps([3, info.image_size, info.image_size]),
        "mean": json.dumps(list(info.mean)),
        "std": json.dumps(list(info.std)),
        "classes": json.dumps(list(info.classes)),
        "group": int(loaded.model.group),
        "readout": (
            f"the output has {len(info.classes)} x {loaded.model.group} neurons: average each class's "
            f"{loaded.model.group} consecutive outputs, then average over the {loaded.profile.timesteps} "
            "timesteps; the class is the argmax"
        ),
        "neuron": "LIF, forward Euler at dt: v += dt/tau ((v_leak - v) + r I); spike when v > v_threshold "
        "(the engine fires at v >= 1); reset to v_reset",
        "batchnorm": "folded into the preceding convolution, or into r and v_leak of the LIF after it",
        "model": json.dumps(model, sort_keys=True),
    }


def to_nir(model: LoadedModel | str | Path, *, dtype=np.float32):
    """The trained model as a ``nir.NIRGraph`` (parameters in ``dtype``)."""
    loaded = _loaded(model)
    g, _ = _build(loaded, dtype)
    import nir

    return nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=nir_metadata(loaded))


def lif_names(model: LoadedModel | str | Path) -> dict[str, str]:
    """Each of the engine's LIF modules (by module name) and the NIR node that stands for it."""
    return _build(_loaded(model), np.float32)[1]


def write_nir(model: LoadedModel | str | Path, out: str | Path) -> Path:
    """Write the model's NIR graph to ``out`` (HDF5), atomically."""
    import nir

    graph = to_nir(model)
    out = Path(out)
    with atomic_path(out) as tmp:
        nir.write(str(tmp), graph)
    return out


def read_nir(path: str | Path):
    """A NIR file with its metadata decoded (strings come back from HDF5 as bytes)."""
    import nir

    graph = nir.read(str(path))
    graph.metadata = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (graph.metadata or {}).items()}
    return graph


# ----------------------------------------------------------------------------------------- NIR import


class NIRLeaky(nn.Module):
    """NIR's LIF as ``snntorch.Leaky``: ``mem <- beta mem + (dt/tau)(r I + v_leak)``, ``beta = 1 - dt/tau``,
    spike when ``mem > v_threshold``, reset to zero (NIR's forward Euler step at ``dt``)."""

    def __init__(self, node, dt: float) -> None:
        import snntorch as snn

        super().__init__()
        if not np.allclose(node.v_reset, 0):
            raise DeployError("only LIF neurons that reset to 0 can be read")
        k = dt / np.asarray(node.tau, dtype=np.float64)
        self.register_buffer("gain", torch.from_numpy(k * node.r))
        self.register_buffer("shift", torch.from_numpy(k * node.v_leak))
        self.leaky = snn.Leaky(
            beta=torch.from_numpy(1 - k),
            threshold=torch.from_numpy(np.asarray(node.v_threshold, dtype=np.float64)),
            reset_mechanism="zero",
            reset_delay=False,
            init_hidden=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = x * self.gain + self.shift
        return self.leaky(current).to(current.dtype)  # snntorch's spike function returns float32

    def reset(self) -> None:
        self.leaky.mem = torch.zeros(0, dtype=self.gain.dtype, device=self.gain.device)


class _Scale(nn.Module):
    def __init__(self, node) -> None:
        super().__init__()
        self.register_buffer("scale", torch.from_numpy(np.asarray(node.scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class _SumPool(nn.Module):
    def __init__(self, node) -> None:
        super().__init__()
        self.k, self.s, self.p = (
            tuple(int(v) for v in np.atleast_1d(a)) for a in (node.kernel_size, node.stride, node.padding)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.k, self.s, self.p, count_include_pad=True, divisor_override=1)


def _affine(node) -> nn.Linear:
    # nirtorch's own Affine mapping leaves the bias at its random initialisation.
    module = nn.Linear(node.weight.shape[1], node.weight.shape[0])
    module.weight.data = torch.from_numpy(np.asarray(node.weight))
    module.bias.data = torch.from_numpy(np.asarray(node.bias))
    return module


class SnnTorchNet(nn.Module):
    """A NIR graph of this project run with snntorch neurons (``nirtorch`` wires the graph).

    ``forward`` takes the encoded input ``[T, B, 3, H, W]`` (or ``[1, B, ...]``, repeated: direct encoding)
    and returns class scores as the engine does: outputs averaged per class group, then over time.
    Every call starts from rest. The neurons keep snntorch's ATan surrogate, so the module can be trained.
    """

    def __init__(self, graph, dtype: torch.dtype = torch.float32) -> None:
        import nir
        import nirtorch

        super().__init__()
        meta = graph.metadata
        if meta.get("format") != NIR_FORMAT:
            raise DeployError(f"not a SpiKernel NIR graph (format {meta.get('format')!r}, expected {NIR_FORMAT})")
        dt = float(meta["dt"])
        self.timesteps, self.group = int(meta["timesteps"]), int(meta["group"])
        node_map = {
            nir.LIF: lambda n: NIRLeaky(n, dt),
            nir.Scale: _Scale,
            nir.SumPool2d: _SumPool,
            nir.Affine: _affine,
            # NIR's flatten counts dimensions of one sample; torch's modules see the batch first.
            nir.Flatten: lambda n: nn.Flatten(n.start_dim + 1, n.end_dim if n.end_dim < 0 else n.end_dim + 1),
        }
        self.graph = nirtorch.nir_to_torch(graph, node_map, dtype=dtype)

    def neurons(self) -> dict[str, NIRLeaky]:
        """The LIF layers by NIR node name."""
        return {name.replace("_", "."): m for name, m in self.graph.named_children() if isinstance(m, NIRLeaky)}

    def steps(self, x: torch.Tensor) -> torch.Tensor:
        """The output layer at every timestep, ``[T, B, outputs]``."""
        for m in self.neurons().values():
            m.reset()
        outs = []
        for t in range(self.timesteps):
            out, _state = self.graph(x[t if x.shape[0] > 1 else 0])
            outs.append(out)
        return torch.stack(outs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.steps(x)
        return out.unflatten(-1, (out.shape[-1] // self.group, self.group)).mean(dim=(-1, 0))


def to_snntorch(model_or_graph, *, dtype: torch.dtype = torch.float32) -> SnnTorchNet:
    """A trained model (or its NIR graph, or a ``.nir`` file) as a snntorch module: export, then import."""
    if isinstance(model_or_graph, (str, Path)) and str(model_or_graph).endswith(".nir"):
        graph = read_nir(model_or_graph)
    elif isinstance(model_or_graph, (LoadedModel, str, Path)):
        graph = to_nir(model_or_graph, dtype=np.float64 if dtype == torch.float64 else np.float32)
    else:
        graph = model_or_graph
    return SnnTorchNet(graph, dtype)


@dataclass
class NirCheck:
    """The engine and the imported graph on one batch: spikes per LIF layer (all timesteps) and decisions."""

    images: int
    dtype: str
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # NIR node: (spikes that differ, total)
    fired: dict[str, int] = field(default_factory=dict)  # NIR node: the engine's spikes
    decisions_equal: int = 0
    max_score_difference: float = 0.0

    @property
    def spikes_equal(self) -> bool:
        return all(diff == 0 for diff, _ in self.layers.values())

    @property
    def ok(self) -> bool:
        return self.decisions_equal == self.images

    def summary(self) -> str:
        spikes = sum(total for _, total in self.layers.values())
        differ = sum(diff for diff, _ in self.layers.values())
        return (
            f"{self.decisions_equal}/{self.images} class decisions equal; {differ:,} of {spikes:,} spike values "
            f"differ over {len(self.layers)} LIF layers and every timestep; largest score difference "
            f"{self.max_score_difference:.2g} ({self.dtype})"
        )


def check_nir(
    model: LoadedModel | str | Path,
    images: torch.Tensor,
    *,
    graph=None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> NirCheck:
    """Run the engine and the NIR graph read back through nirtorch/snntorch on the same encoded batch.

    ``images``: ``[B, 3, H, W]`` in [0, 1]. ``graph`` defaults to a fresh export at ``dtype``'s precision.
    In float64 the folded BatchNorm and the reordered sums change membranes by about 1e-16, so every spike
    is expected equal; in float32, by about 1e-7.
    """

    loaded = _loaded(model)
    if graph is None:
        graph = to_nir(loaded, dtype=np.float64 if dtype == torch.float64 else np.float32)
    imported = SnnTorchNet(graph, dtype).eval()
    names = lif_names(loaded)
    engine = copy.deepcopy(loaded.model).to(dtype=dtype, device="cpu").eval()
    with seeded(torch.device("cpu"), seed):
        x = encode(loaded.profile.encoding, images.cpu(), loaded.profile.timesteps, loaded.data).to(dtype)

    ours: dict[str, torch.Tensor] = {}
    theirs: dict[str, list[torch.Tensor]] = {n: [] for n in names.values()}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, n=names[name]: ours.__setitem__(n, out))
        for name, m in engine.named_modules()
        if name in names
    ]
    neurons = imported.neurons()
    hooks += [neurons[n].register_forward_hook(lambda _m, _i, out, n=n: theirs[n].append(out)) for n in theirs]
    try:
        with torch.no_grad():
            expected, got = engine(x), imported(x)
    finally:
        for h in hooks:
            h.remove()
    report = NirCheck(images=len(images), dtype=str(dtype).removeprefix("torch."))
    for n, spikes in ours.items():
        other = torch.stack(theirs[n])
        report.layers[n] = (int((spikes != other).sum()), spikes.numel())
        report.fired[n] = int(spikes.sum())
    report.decisions_equal = int((expected.argmax(1) == got.argmax(1)).sum())
    report.max_score_difference = float((expected - got).abs().max())
    return report
