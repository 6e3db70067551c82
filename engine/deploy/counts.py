"""Synaptic operations and energy of a trained model, and the accuracies stored beside it.

**Energy** (``count_ops``, priced by ``engine.core.energy.EnergyModel``): synaptic operations per image on the
test set. A layer fed by spikes costs one accumulate (AC) per spike and target it reaches (counted exactly:
every output position and channel whose receptive field holds the spike); a layer fed by analog values (the
stem under direct encoding) costs its dense multiply-accumulates (MAC). Energy = ACs x ``pj_per_ac`` + MACs
x ``pj_per_mac``; the same network as an ANN does every layer's dense MACs once. Pooling, node sums, BatchNorm
and membrane updates are not counted, as in the usual estimate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.energy import EnergyModel
from engine.nn.network import SpikingNet, spike_layers
from engine.train.quantize import QUANT_BITS, QUANT_SCHEME, quantized_model
from engine.train.training import DeviceImages, evaluate

# --------------------------------------------------------------------------------------------- energy


@dataclass
class OpCounts:
    """Per image, on a test set: synaptic ops of the SNN (ACs fed by spikes, MACs fed by analog values),
    the same network's ANN MACs, and per-layer details."""

    images: int = 0
    acs: float = 0.0
    macs: float = 0.0
    ann_macs: float = 0.0
    accuracy: float | None = None
    layers: list[dict] = field(default_factory=list)  # weight layers: name, input, acs, macs, ann_macs
    firing: list[dict] = field(default_factory=list)  # LIF layers: name, firing_rate

    def energy(self, model: EnergyModel = EnergyModel()) -> tuple[float, float]:
        """Microjoules per inference: (SNN, ANN)."""
        return model.snn_uj(self.acs, self.macs), model.ann_uj(self.ann_macs)


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def count_ops(model: SpikingNet, images, data, profile, *, seed: int, batch_size: int = 256) -> OpCounts:
    """Run the test images (encoded with ``seed``, as ``train.evaluate``) and count operations per image.

    A spike-fed layer costs one AC per spike and per target it reaches: for a convolution, every output
    channel at every output position whose receptive field holds the spike (exact at the borders); for a
    linear layer, its outputs. The head's average pool sits between the LIF and the first linear layer, so
    there each spike reaches the linear layer's outputs through the pool (the pool folded into the weights).
    An analog-fed layer costs its dense MACs. The ANN is the same network run once, every layer dense.
    """

    layers = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    totals = {name: {"acs": 0.0, "macs": 0.0, "ann_macs": 0.0, "spiking": True} for name in layers}
    lif_names_ = {m: name for name, m in model.named_modules() if m in set(spike_layers(model))}
    fired = {name: [0.0, 0] for name in lif_names_.values()}
    head_pool = model.head[2] if isinstance(model.head[2], nn.AvgPool2d) else None
    fc1 = model.head[5]

    def on_layer(module, inputs, out, name):
        x, t = inputs[0], totals[name]
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            t["ann_macs"] += out[0].numel() * per_output
            if _is_binary(x):
                ones = torch.ones(1, module.in_channels, *module.kernel_size, dtype=x.dtype, device=x.device)
                reached = F.conv2d(x.flatten(0, 1), ones, None, module.stride, module.padding, module.dilation)
                t["acs"] += float(reached.sum()) * module.out_channels
            else:
                t["macs"] += out.numel() * per_output
                t["spiking"] = False
        else:
            t["ann_macs"] += out[0].numel() * module.in_features
            if module is fc1 and head_pool is not None:  # pooled spikes: each pooled value is spikes / area
                k = torch.nn.modules.utils._pair(head_pool.kernel_size)
                t["acs"] += float(x.sum()) * k[0] * k[1] * module.out_features
            elif _is_binary(x):
                t["acs"] += float(x.sum()) * module.out_features
            else:
                t["macs"] += out.numel() * module.in_features
                t["spiking"] = False

    def on_lif(module, _inputs, out):
        f = fired[lif_names_[module]]
        f[0] += float(out.sum())
        f[1] += out.numel()

    hooks = [m.register_forward_hook(lambda mod, i, o, n=name: on_layer(mod, i, o, n)) for name, m in layers.items()]
    hooks += [m.register_forward_hook(on_lif) for m in lif_names_]
    try:
        accuracy, _rate = evaluate(model, images, data, profile, seed=seed, batch_size=batch_size)
    finally:
        for h in hooks:
            h.remove()
    n = len(images)
    counts = OpCounts(images=n, accuracy=accuracy)
    for name, t in totals.items():
        row = {
            "layer": name,
            "input": "spikes" if t["spiking"] else "analog",
            **{k: t[k] / n for k in ("acs", "macs", "ann_macs")},
        }
        counts.layers.append(row)
        counts.acs += row["acs"]
        counts.macs += row["macs"]
        counts.ann_macs += row["ann_macs"]
    counts.firing = [{"layer": name, "firing_rate": s / max(total, 1)} for name, (s, total) in fired.items()]
    return counts


# ---------------------------------------------------------------------------------- measure and store


def measure(
    model: SpikingNet, profile, data, *, seed: int, device: torch.device | str = "cpu", batch_size: int = 256
) -> dict:
    """What the store keeps per trained run: test accuracy at 8 and 4 bits, synaptic ops per image, and the
    per-layer details (JSON). ``seed`` is the run's evaluation seed (the fp32 accuracy's encoding)."""

    images = DeviceImages(data.test, torch.device(device))
    counts = count_ops(model, images, data, profile, seed=seed, batch_size=batch_size)
    result = {"synops": counts.acs, "macs": counts.macs, "ann_macs": counts.ann_macs}
    for bits in QUANT_BITS:
        result[f"accuracy_{bits}bit"] = evaluate(
            quantized_model(model, bits), images, data, profile, seed=seed, batch_size=batch_size
        )[0]
    details = {
        "images": counts.images,
        "accuracy_fp32": counts.accuracy,
        "layers": counts.layers,
        "firing": counts.firing,
        "quantization": QUANT_SCHEME,
    }
    result["deploy"] = json.dumps(details)
    return result
