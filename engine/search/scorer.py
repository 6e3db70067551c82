"""The training-free score of one cell (SAHD): the spike patterns of an untrained network on a few batches.

Each LIF layer's binary spike codes feed a Hamming-distance kernel (``engine.search.hamming``); the score is
its log-determinant, averaged over the configured draws. Weights and batches are seeded per candidate (or
shared by all candidates), so a cell's score depends only on the seed, the cell and its index.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.core.errors import InputError
from engine.core.profiles import Profile, ScoreConfig
from engine.core.seeds import SearchStream, derive_seed, seeded
from engine.core.space import Genotype, Space
from engine.data.encoding import encode
from engine.data.images import ImageData, augment
from engine.nn.devices import keep_freed_memory
from engine.nn.network import build_network, spike_layers, stepping
from engine.nn.neuron import recording
from engine.search.hamming import KernelAccumulator


class Scorer:
    """Scores cells of one kernel set on one dataset with a profile's score settings.

    Decoded images stay in memory and shared batches are prepared once, so scoring a candidate costs
    only its network.
    """

    def __init__(
        self,
        kernel_set: Space,
        profile: Profile,
        data: ImageData,
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
        config: ScoreConfig | None = None,
    ) -> None:
        self.kernel_set, self.profile, self.data = kernel_set, profile, data
        self.seed, self.device = seed, torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.config = config or profile.score
        self.check(self.config, data)
        self.images, _labels = data.train.tensors()
        self._shared = [
            self._batches(derive_seed(seed, SearchStream.SHARED_BATCHES, d)) for d in range(self.config.draws)
        ]

    @staticmethod
    def check(config: ScoreConfig, data: ImageData) -> None:
        """Raises ValueError when ``data`` cannot give ``config``'s batches."""
        if config.batch_size > len(data.train):
            raise InputError(
                f"score batch of {config.batch_size} is larger than the training split ({len(data.train)} images)"
            )

    def _batches(self, seed: int) -> list[torch.Tensor]:
        """Augmented training batches in [0, 1], drawn without replacement within a draw."""
        g = torch.Generator().manual_seed(seed)
        cfg = self.config
        order = torch.randperm(len(self.images), generator=g)
        batches = []
        for b in range(cfg.batches):
            idx = order[(b * cfg.batch_size) % len(order) :][: cfg.batch_size]
            x = self.images[idx].float().div_(255)
            batches.append(augment(x, self.data.info, g).to(self.device))
        return batches

    def score(self, genotype: Genotype, index: int) -> tuple[float, int, float]:
        """``(score, silent_layers, firing_rate)`` of one cell, averaged over the configured draws."""
        cfg = self.config
        scores, spikes, neurons, silent = [], 0.0, 0, 0
        for d in range(cfg.draws):
            key = (
                (self.seed, SearchStream.SHARED_WEIGHTS, d)
                if cfg.shared
                else (self.seed, SearchStream.WEIGHTS, index, d)
            )
            batches = (
                self._shared[d] if cfg.shared else self._batches(derive_seed(self.seed, SearchStream.BATCHES, index, d))
            )
            with seeded(self.device, derive_seed(*key)), torch.no_grad():
                net = build_network(genotype, self.kernel_set, self.profile, self.data.info, device=self.device)
                net.train(cfg.train_mode)
                layers = spike_layers(net)
                tally = SpikeTally(layers, cfg.count_silent)
                with recording(layers, tally, carry=not cfg.reset_between_batches):
                    for b, x in enumerate(batches):
                        tally.next_batch()
                        with cfg.precision.autocast(self.device):
                            encoded = encode(self.profile.encoding, x, self.profile.timesteps, self.data.info)
                            if cfg.step_through_time:
                                stepping(net, True, keep_potentials=b > 0 and not cfg.reset_between_batches)
                                for t in range(self.profile.timesteps):
                                    net(encoded[min(t, len(encoded) - 1)].unsqueeze(0), step=True)
                            else:
                                net(encoded)
                        scores.append(tally.kernel.score())
            silent = max(silent, tally.silent_layers)
            spikes, neurons = spikes + tally.spikes, neurons + tally.neurons
        return float(np.mean(scores)), silent, spikes / max(neurons, 1)


class SpikeTally:
    """What the score reads from one network's spikes as its layers fire (a ``recording`` listener): the
    current batch's kernel, which layers ever fired, and the spikes and neurons counted for the firing rate."""

    def __init__(self, layers: list, count_silent: bool) -> None:
        self.count_silent = count_silent
        self.fired = dict.fromkeys(layers, False)
        self.spikes, self.neurons = 0.0, 0
        self.kernel: KernelAccumulator | None = None

    def next_batch(self) -> None:
        self.kernel = KernelAccumulator(self.count_silent)

    def __call__(self, layer, codes: torch.Tensor, spikes: torch.Tensor) -> None:
        count = float(self.kernel.add(codes, layer.fanout).sum())
        self.fired[layer] = self.fired[layer] or count > 0
        self.spikes += count * layer.fanout
        self.neurons += spikes.numel() * layer.fanout

    @property
    def silent_layers(self) -> int:
        return sum(not fired for fired in self.fired.values())
