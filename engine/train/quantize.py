"""Integer weights: per-output-channel symmetric quantisation of every convolution and linear layer.

Model files may hold 8- or 4-bit integer weights with one fp32 scale per output channel; ``load_model``
rebuilds the float weights with ``dequantize`` (what ``engine.deploy`` writes with ``write_quantized``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from engine.core.errors import InputError

QUANT_BITS = (8, 4)


class QuantizationError(InputError):
    """A bit width the format does not have."""


QUANT_SCHEME = "per-output-channel symmetric, round to nearest; biases, BatchNorm and neurons in fp32"


def quantized_weights(model: nn.Module) -> list[str]:
    """The weights that are quantised: every convolution's and linear layer's (Eq. 2-3's parameters)."""
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def quantize_tensor(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: integers in [-(2^(b-1) - 1), 2^(b-1) - 1] (int8) and one fp32 scale per output channel."""
    if bits not in QUANT_BITS:
        raise QuantizationError(f"weights are quantised to {' or '.join(map(str, QUANT_BITS))} bits, not {bits!r}")
    qmax = 2 ** (bits - 1) - 1
    flat = weight.detach().float().flatten(1)
    scale = flat.abs().amax(dim=1) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero channel stays zero
    q = torch.round(flat / scale[:, None]).clamp_(-qmax, qmax).to(torch.int8)
    return q.reshape(weight.shape).contiguous(), scale.contiguous()


def dequantize_tensor(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.view(-1, *[1] * (q.dim() - 1))


def quantized_model(model: nn.Module, bits: int) -> nn.Module:
    """A copy whose quantised weights are replaced by their dequantised values (what the integer file loads to)."""
    copy_ = copy.deepcopy(model)
    params = dict(copy_.named_parameters())
    with torch.no_grad():
        for name in quantized_weights(copy_):
            q, scale = quantize_tensor(params[name], bits)
            params[name].copy_(dequantize_tensor(q, scale))
    return copy_


def dequantize(tensors: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """The tensors of an integer file with each quantised weight of ``names`` rebuilt from its ``.q`` and
    ``.scale`` (``load_model`` has checked them against the network first)."""
    out = dict(tensors)
    for name in names:
        out[name] = dequantize_tensor(out.pop(f"{name}.q"), out.pop(f"{name}.scale"))
    return out
