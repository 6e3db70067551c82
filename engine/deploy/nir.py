"""The trained model for neuromorphic hardware: NIR export, read-back into snntorch, and the spike-level check.

**NIR export** (``to_nir``, ``write_nir``). The network becomes a graph of the Neuromorphic Intermediate
Representation, written with the ``nir`` package, that the ecosystem's importers load unchanged: it uses only
``Conv2d`` (ungrouped), ``SumPool2d`` (unpadded), ``Flatten``, ``Linear``/``Affine``, plain ``LIF`` nodes
and edges (sums):

- BatchNorm is folded at export (its inference statistics are the same at every timestep) into the weights
  and biases of what feeds it: the convolution before it (weights scaled per output channel, its shift as
  the bias), or, where it stands before a LIF (``down`` and ``head``), every edge into that LIF's sum: a
  convolution fed only there takes the scale in its weights (one of them its shift); a source that also
  feeds something else (a skip edge forwarding a cell's input, say) reaches the sum through a 1x1
  convolution carrying the scale. So every LIF is plain: ``r = 1``, ``v_leak = 0``, ``v_reset = 0``.
- Cell nodes are sums: they become edges. Each op's output has an edge to every consumer of the node it
  feeds (a skip edge forwards its source's edges); a source reaching a consumer twice has its weight 2 folded
  the same way.
- Average pools: unpadded ones (``down``'s 2x2, the head's) are ``SumPool2d`` with the ``1/k^2`` folded into
  the convolution before (``down``) or the linear layer after (head); powers of two, so exactly. The cells'
  3x3 average pool is convolutions: counting padding, one; not counting it (the default), the window sum and
  two convolutions per axis that divide each pixel by the number of pixels its window covers, exactly
  (``_Builder.cell_pool``). Dense, ``C x C`` kernels: snntorch's and spikingjelly's importers take no grouped
  convolution.
- The LIF ``V <- V + (X - V) / tau`` (tau = 4/3 timesteps, threshold 1, hard reset to 0) is the forward
  Euler step of NIR's ``tau dv/dt = (v_leak - v) + r I`` at the timestep ``dt`` written in the graph's
  metadata, with ``tau = 4/3 dt``; ``dt`` = 0.1 ms, the step snntorch's and spikingjelly's importers assume
  (norse takes it as ``dt``). NIR fires on ``v > v_threshold``, the engine on ``V >= 1``: they differ only
  when a real-valued membrane lands exactly on the threshold.
- The metadata states the input (``encoding``: rate = one Bernoulli spike frame of pixel intensities in
  [0, 1] per timestep; direct = the normalised image at every timestep), ``timesteps``, ``dt``, the readout
  (the output's ``group`` consecutive neurons per class averaged, then over the timesteps) and how to call
  each importer.

``to_snntorch`` reads such a graph (and the ``spikernel-nir/1`` graphs written before: ``dt`` 1 ms,
BatchNorm in the LIFs' ``r`` and ``v_leak``, ``Scale`` nodes) back with ``nirtorch`` into snntorch modules
(NIR's LIF as ``snntorch.Leaky``); ``check_nir`` runs it and the engine on the same encoded batch and compares
every spike of every LIF layer at every timestep and the class decisions.
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
from engine.core.seeds import seeded
from engine.core.space import OpKind
from engine.data.encoding import encode
from engine.nn.layers import SeqAvgPool2d, SeqBatchNorm2d
from engine.nn.network import Cell, ConvBN, Identity, SpikingNet, fire_key
from engine.train.checkpoint import LoadedModel, load_model

NIR_FORMAT = "spikernel-nir/2"
READABLE_FORMATS = ("spikernel-nir/1", NIR_FORMAT)  # /1: dt 1 ms, BatchNorm in the LIFs, Scale nodes
# Seconds per timestep in the exported graph (tau = 4/3 dt): the step snntorch and spikingjelly assume.
DT = 1e-4


class DeployError(InputError):
    """A model that cannot be exported or measured as asked."""


def _loaded(model: LoadedModel | str | Path) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_model(model)


# ------------------------------------------------------------------------------------------ NIR export

Terms = dict[str, np.ndarray]  # a cell node's value: NIR node -> per-channel coefficient (float64)


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNorm as ``a * x + b`` per channel (float64)."""
    var, mean = bn.running_var.detach().double(), bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    a = gamma / torch.sqrt(var + bn.eps)
    return a.cpu().numpy(), (beta - mean * a).cpu().numpy()


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _plus(a: Terms, b: Terms, scale: np.ndarray | float = 1.0) -> Terms:
    """``a + scale * b`` as terms (a source in both gets the sum of its coefficients)."""
    out = dict(a)
    for src, c in b.items():
        out[src] = out[src] + scale * c if src in out else scale * c
    return out


def _window(pool: nn.AvgPool2d) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    pair = torch.nn.modules.utils._pair
    return pair(pool.kernel_size), pair(pool.stride or pool.kernel_size), pair(pool.padding)


def _edge_weights(n: int, p: int) -> tuple[list[int], np.ndarray]:
    """The shifts and their weights that make an average over ``2p + 1`` neighbours along an axis of length
    ``n``, padding not counted, out of zero-padded convolutions (see ``_Builder.cell_pool``).

    Shifting a map by ``s`` and back loses the positions ``i`` with ``i - s`` outside the axis: summed with
    weights ``alpha_s``, the shifted-and-back copies of the window sum scale position ``i`` by
    ``sum_s alpha_s [0 <= i - s < n]``, which is solved to be one over the pixels ``i``'s window covers.
    """
    shifts = list(range(-p, p + 1))
    i = np.arange(n)
    covered = np.minimum(i + p, n - 1) - np.maximum(i - p, 0) + 1
    masks = np.stack([((i - s >= 0) & (i - s < n)).astype(np.float64) for s in shifts], axis=1)
    alpha = np.linalg.lstsq(masks, 1.0 / covered, rcond=None)[0]
    if np.abs(masks @ alpha - 1.0 / covered).max() > 1e-12:
        raise DeployError(f"no exact convolutional form of a {2 * p + 1}-wide average over {n} pixels")
    return shifts, alpha


class _Builder:
    """Nodes and edges of a NIR graph, with parameters in float64 until ``finish``; ``shapes`` holds each
    node's output shape (without batch).

    ``feed`` connects a weighted sum of nodes to a consumer. A weight other than one (a BatchNorm's scale, a
    source counted twice) is folded at ``finish`` into the source's convolution when the consumer is its only
    one, or else carried by a 1x1 convolution on the way.
    """

    def __init__(self) -> None:
        self.nodes: dict = {}
        self.edges: list[tuple[str, str]] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.scaled: list[tuple[str, str, np.ndarray, np.ndarray | None]] = []

    def add(self, name: str, node, shape: tuple[int, ...], sources: tuple[str, ...] = ()) -> str:
        if name in self.nodes:
            raise DeployError(f"two NIR nodes named {name}")
        self.nodes[name], self.shapes[name] = node, tuple(int(v) for v in shape)
        self.edges += [(src, name) for src in sources]
        return name

    def feed(self, dst: str, terms: Terms, bias: np.ndarray | None = None) -> None:
        """``dst``'s input is ``sum(c * src for src, c in terms) + bias`` (per channel)."""
        if not terms:
            raise DeployError(f"{dst} has no input")
        for src, c in terms.items():
            if bias is None and np.all(c == 1):
                self.edges.append((src, dst))
            else:
                self.scaled.append((src, dst, np.broadcast_to(c, self.shapes[src][:1]), bias))
                bias = None  # added once

    def conv(self, name, weight, bias, source: str | Terms, *, stride=(1, 1), padding=(0, 0), dilation=(1, 1)) -> str:
        """A ``Conv2d`` (groups 1: snntorch's and spikingjelly's importers take no others) fed by a node, or by
        a weighted sum of nodes (``feed``)."""
        import nir

        first = source if isinstance(source, str) else next(iter(source))
        c, h, w = self.shapes[first]
        if weight.shape[1] != c:
            raise DeployError(f"{name}: {weight.shape[1]} input channels for a source of {c}")
        k, s, p, d = weight.shape[2:], stride, padding, dilation
        out = tuple((n + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, n in enumerate((h, w)))
        node = nir.Conv2d(
            input_shape=(h, w),
            weight=np.asarray(weight, dtype=np.float64),
            stride=tuple(int(v) for v in s),
            padding=tuple(int(v) for v in p),
            dilation=tuple(int(v) for v in d),
            groups=1,
            bias=np.asarray(bias, dtype=np.float64),
        )
        self.add(name, node, (weight.shape[0], *out))
        if isinstance(source, str):
            self.edges.append((source, name))
        else:
            self.feed(name, source)
        return name

    def conv_bn(self, name: str, conv_bn: ConvBN, source: str, gain: float = 1.0) -> str:
        """A convolution with the BatchNorm after it folded in (weights scaled per output channel, its shift
        as the bias), times ``gain``."""
        conv, bn = conv_bn[0], conv_bn[1]
        if conv.groups != 1 or isinstance(conv.padding, str):
            raise DeployError(f"{name}: only ungrouped convolutions with numeric padding are exported")
        a, b = _bn_affine(bn)
        if conv.bias is not None:
            b = b + a * _numpy(conv.bias)
        weight = _numpy(conv.weight) * (gain * a)[:, None, None, None]
        return self.conv(
            name, weight, gain * b, source, stride=conv.stride, padding=conv.padding, dilation=conv.dilation
        )

    def lif(self, name: str, neuron: nn.Module, shape: tuple[int, ...]) -> str:
        """A plain LIF: ``r = 1``, ``v_leak = 0``, reset to 0, ``tau = 4/3 dt`` (every importer's default)."""
        import nir

        full = lambda v: np.full(shape, v, dtype=np.float64)  # noqa: E731
        node = nir.LIF(
            tau=full(neuron.tau * DT), r=full(1.0), v_leak=full(0.0), v_threshold=full(neuron.v_th), v_reset=full(0.0)
        )
        return self.add(name, node, shape)

    def sum_pool(self, name: str, pool: nn.AvgPool2d, source: str) -> tuple[str, float]:
        """An unpadded average pool as ``SumPool2d``; returns the node and the divisor left to fold into a
        neighbouring layer's weights."""
        import nir

        k, s, p = _window(pool)
        if p != (0, 0) or pool.ceil_mode:
            raise DeployError(f"{name}: only unpadded pools become SumPool2d")
        c, h, w = self.shapes[source]
        out = (c, (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1)
        node = nir.SumPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p))
        return self.add(name, node, out, (source,)), float(k[0] * k[1])

    def cell_pool(self, name: str, pool: nn.AvgPool2d, terms: Terms) -> str:
        """The cell's average pool as convolutions (no importer maps a padded ``SumPool2d``, nor ``Scale``).

        Padding counted: one convolution, ``1/k^2`` in a ``k x k`` kernel per channel. Padding not counted
        (stride 1, ``k = 2p + 1``): the divisor at a pixel is the number of pixels its window covers, the
        product of one factor per axis (``k`` inside, fewer within ``p`` of a border). A convolution sums each
        window (``name.sum``); then, per axis, one shifts the sums by each ``s`` in ``-p..p`` (a channel per
        shift) and the next shifts them back and adds them with weights ``alpha_s`` (``_edge_weights``): a
        copy shifted out of the map and back has lost the positions near one border, which makes the sum of
        copies position-dependent, ``1 / covered`` exactly. Five convolutions; exact in real arithmetic.
        """
        k, s, p = _window(pool)
        c, h, w = self.shapes[next(iter(terms))]
        eye = np.eye(c)
        if pool.ceil_mode or k[0] != k[1]:
            raise DeployError(f"{name}: only square pools without ceil_mode are exported")
        if pool.count_include_pad or p == (0, 0):
            weight = np.einsum("oi,hw->oihw", eye, np.full(k, 1.0 / (k[0] * k[1])))
            return self.conv(name, weight, np.zeros(c), terms, stride=s, padding=p)
        if s != (1, 1) or k[0] != 2 * p[0] + 1 or p[0] != p[1]:
            raise DeployError(f"{name}: a pool not counting padding needs stride 1 and padding (k - 1) / 2")
        q = p[0]
        x = self.conv(f"{name}.sum", np.einsum("oi,hw->oihw", eye, np.ones(k)), np.zeros(c), terms, padding=p)
        for axis, n in ((0, h), (1, w)):
            shifts, alpha = _edge_weights(n, q)
            m = len(shifts)
            # Channel j*c + i: channel i shifted by s_j (square kernels: NIR sizes a Conv2d by its first side).
            shift, back = np.zeros((m * c, c, k[0], k[1])), np.zeros((c, m * c, k[0], k[1]))
            for j, (sj, aj) in enumerate(zip(shifts, alpha, strict=True)):
                there, home = ((q + sj, q), (q - sj, q)) if axis == 0 else ((q, q + sj), (q, q - sj))
                shift[j * c : (j + 1) * c, :, there[0], there[1]] = eye
                back[:, j * c : (j + 1) * c, home[0], home[1]] = aj * eye
            tag = ("rows", "cols")[axis]
            spread = self.conv(f"{name}.{tag}", shift, np.zeros(m * c), x, padding=p)
            x = self.conv(name if axis == 1 else f"{name}.{tag}.back", back, np.zeros(c), spread, padding=p)
        return x

    def finish(self, dtype) -> None:
        """Fold or carry the scaled edges, then cast every parameter to ``dtype``."""
        import nir

        fanout = Counter(src for src, _ in self.edges) + Counter(src for src, *_ in self.scaled)
        for src, dst, c, bias in self.scaled:
            node, b = self.nodes[src], np.zeros(len(c)) if bias is None else bias
            if fanout[src] == 1 and isinstance(node, nir.Conv2d):  # its only consumer: fold into it
                node.weight = node.weight * c[:, None, None, None]
                node.bias = node.bias * c + b
                self.edges.append((src, dst))
            else:
                self.edges.append((self.conv(f"{src}.to.{dst}", np.diag(c)[:, :, None, None], b, src), dst))
        self.scaled = []
        for node in self.nodes.values():
            for key in ("weight", "bias", "tau", "r", "v_leak", "v_threshold", "v_reset"):
                value = getattr(node, key, None)
                if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                    setattr(node, key, value.astype(dtype))


def _cell(g: _Builder, prefix: str, cell: Cell, x0: Terms) -> tuple[Terms, dict[str, str]]:
    """A cell's edges; returns node 3 as terms and {engine LIF name: NIR node name}."""
    sums: dict[int, Terms] = {0: x0}
    lifs: dict[str, str] = {}
    shape = g.shapes[next(iter(x0))]
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
                g.lif(lif, cell.fire[key], shape)
                g.feed(lif, sums[s])
                lifs[f"{prefix}.fire.{key}"] = lif
            out = {g.conv_bn(f"{prefix}.e{s}{d}", module, lif): np.ones(shape[0])}
        elif op.kind is OpKind.SKIP and isinstance(module, Identity):
            out = sums[s]
        elif op.kind is OpKind.AVGPOOL and isinstance(module, nn.AvgPool2d):
            out = {g.cell_pool(f"{prefix}.e{s}{d}", module, sums[s]): np.ones(shape[0])}
        else:
            raise DeployError(f"{prefix}: edge {s}->{d} ({op.label}) has no NIR mapping")
        sums[d] = _plus(sums.get(d, {}), out)
    if 3 not in sums:
        raise DeployError(f"{prefix}: nothing feeds the cell's output")
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


def _build(loaded: LoadedModel, dtype) -> tuple[_Builder, dict[str, str]]:
    import nir

    net = loaded.model
    _check_layout(net)
    size = loaded.data.image_size
    g = _Builder()
    g.add("input", nir.Input(input_type=np.array([3, size, size])), (3, size, size))
    stem = g.conv_bn("stem", net.stem, "input")
    c = g.shapes[stem][0]
    out1, lifs = _cell(g, "cell1", net.cell1, {stem: np.ones(c)})
    # down: BatchNorm folded into what feeds its LIF; the pool's 1/k^2 into the convolution before it.
    a, b = _bn_affine(net.down[0])
    g.lif("down.lif", net.down[1], g.shapes[stem])
    g.feed("down.lif", _plus({}, out1, a), bias=b)
    divisor = float(np.prod(_window(net.down[3])[0]))
    g.conv_bn("down.conv", net.down[2], "down.lif", gain=1.0 / divisor)
    pooled, _ = g.sum_pool("down.pool", net.down[3], "down.conv")
    out2, lifs2 = _cell(g, "cell2", net.cell2, {pooled: np.ones(g.shapes[pooled][0])})
    # head: BatchNorm likewise; the pool's 1/k^2 into the first linear layer.
    a, b = _bn_affine(net.head[0])
    g.lif("head.lif", net.head[1], g.shapes[pooled])
    g.feed("head.lif", _plus({}, out2, a), bias=b)
    head_pool, divisor = g.sum_pool("head.pool", net.head[2], "head.lif")
    features = int(np.prod(g.shapes[head_pool]))
    # NIR's types leave the batch out: the flatten starts at the first dimension of one sample.
    flatten = nir.Flatten(input_type={"input": np.array(g.shapes[head_pool])}, start_dim=0, end_dim=-1)
    g.add("head.flatten", flatten, (features,), (head_pool,))
    fc1, fc2 = net.head[5], net.head[7]
    w1 = _numpy(fc1.weight) / divisor
    node = nir.Linear(w1) if fc1.bias is None else nir.Affine(w1, _numpy(fc1.bias))
    g.add("head.fc1", node, (fc1.out_features,), ("head.flatten",))
    g.lif("head.lif2", net.head[6], (fc1.out_features,))
    g.edges.append(("head.fc1", "head.lif2"))
    bias = _numpy(fc2.bias) if fc2.bias is not None else np.zeros(fc2.out_features)
    g.add("head.fc2", nir.Affine(_numpy(fc2.weight), bias), (fc2.out_features,), ("head.lif2",))
    g.add("output", nir.Output(output_type=np.array([fc2.out_features])), (fc2.out_features,), ("head.fc2",))
    g.finish(dtype)
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
        "(the engine fires at v >= 1); reset to v_reset. Every LIF here has r = 1, v_leak = 0, v_reset = 0, "
        "tau = 4/3 dt",
        "importers": f"written for dt = {DT:g} s: snntorch.import_nir.import_from_nir(graph) and "
        "spikingjelly.activation_based.nir_exchange.import_from_nir(graph) assume it; "
        f"norse.torch.from_nir(graph, dt={DT:g}) needs it stated. snntorch's and norse's Flatten also flatten "
        "the batch: run them one image at a time",
        "batchnorm": "folded into the weights and biases of what feeds it (a source shared with another "
        "consumer reaches it through a 1x1 convolution carrying the scale)",
        "pooling": "unpadded average pools are SumPool2d with 1/k^2 folded into the layer before (down) or "
        "after (head); the cells' 3x3 average pool is convolutions (padding not counted: two per axis, exact)",
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
        if meta.get("format") not in READABLE_FORMATS:
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
