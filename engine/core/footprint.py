"""Parameter counts and memory, computed from (genotype, space, profile, dataset) without building.

Eq. 2-3 of SpiKernel counts conv and linear weights (H*W*C*F) plus biases, summed over layers.
PyTorch's count adds the BatchNorm affine parameters. Memory is the Eq. 2-3 count times the bit width
(``weight_bytes``: the one place that arithmetic is written).

Plain values only, no torch: the dashboard, the store and Alg. 1 use this module, and the network
(``engine.nn.network``) takes its shape arithmetic (``stem_stride``, ``head_features``) from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.core.errors import InputError
from engine.core.profiles import Macro, Profile
from engine.core.space import Genotype, Space

BIT_WIDTHS = (32, 16, 8, 4)  # the weight bit widths a memory is given at


def check_bits(bits: int) -> int:
    """``bits`` when it is one of ``BIT_WIDTHS``, else ``ValueError``."""
    if isinstance(bits, bool) or bits not in BIT_WIDTHS:
        raise InputError(f"bit width must be one of {BIT_WIDTHS}, got {bits!r}")
    return bits


def weight_bytes(params, bits: int = 32):
    """Bytes of ``params`` weights stored at ``bits`` each: params x bits / 8 (a count or a pandas column)."""
    return params * check_bits(bits) / 8


class DataShape(Protocol):
    """What the network needs to know of a dataset (``engine.data.images.DatasetInfo`` satisfies it)."""

    macro: str
    image_size: int

    @property
    def num_classes(self) -> int: ...


def stem_stride(image_size: int) -> int:
    """64 px inputs (TinyImageNet) are halved by the stem, as in SNASNet; 32 px ones are not."""
    return 2 if image_size >= 64 else 1


def head_features(macro: Macro, image_size: int) -> int:
    """Inputs of the classifier's first layer: cell 2's channels times the pooled side, squared."""
    side = image_size // stem_stride(image_size) // 2 // macro.pool
    if side < 1:
        raise InputError(f"images of {image_size} px are too small for a head pool of {macro.pool}")
    return 2 * macro.channels * side * side


@dataclass(frozen=True)
class LayerCount:
    name: str
    shape: str
    weights: int
    biases: int = 0
    norm: int = 0  # BatchNorm affine parameters (PyTorch's count only)

    @property
    def params(self) -> int:
        return self.weights + self.biases


def _conv_bn(name: str, c_in: int, c_out: int, k: int) -> LayerCount:
    return LayerCount(name, f"conv {k}x{k} {c_in}->{c_out} + BN", k * k * c_in * c_out, 0, 2 * c_out)


def _cell(prefix: str, genotype: Genotype, space: Space, c: int) -> list[LayerCount]:
    ops = [(s, d, space.op(code)) for s, d, code in genotype.edges]
    return [_conv_bn(f"{prefix}.e{s}{d}", c, c, op.kernel) for s, d, op in ops if op.is_conv]


def layer_counts(genotype: Genotype, kernel_set: Space, profile: Profile, data: DataShape) -> list[LayerCount]:
    """Per-layer parameters in forward order (layers without parameters left out)."""
    m = profile.macro(data.macro)
    c, outputs = m.channels, data.num_classes * m.group
    features = head_features(m, data.image_size)
    return [
        _conv_bn("stem", 3, c, 3),
        *_cell("cell1", genotype, kernel_set, c),
        LayerCount("down.bn", f"BN {c}", 0, 0, 2 * c),
        _conv_bn("down.conv", c, 2 * c, 3),
        *_cell("cell2", genotype, kernel_set, 2 * c),
        LayerCount("head.bn", f"BN {2 * c}", 0, 0, 4 * c),
        LayerCount("head.fc1", f"linear {features}->{m.hidden}", features * m.hidden),
        LayerCount("head.fc2", f"linear {m.hidden}->{outputs}", m.hidden * outputs, outputs),
    ]


@dataclass(frozen=True)
class Footprint:
    params: int  # Eq. 2-3: conv/linear weights and biases
    params_torch: int  # plus BatchNorm affine: what PyTorch counts as trainable

    def bytes(self, bits: int = 32) -> int:
        return int(weight_bytes(self.params, bits))


def footprint(genotype: Genotype, kernel_set: Space, profile: Profile, data: DataShape) -> Footprint:
    layers = layer_counts(genotype, kernel_set, profile, data)
    params = sum(layer.params for layer in layers)
    return Footprint(params, params + sum(layer.norm for layer in layers))


def format_count(n: float) -> str:
    """``19886452 -> '19.89 M'``: how the UI and command line show counts."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"
