"""Surrogate-gradient training through time, resumable after every epoch.

Every random choice of epoch ``e`` (shuffling, augmentation, rate-encoding spikes, dropout masks) is drawn
from a generator seeded with ``(seed, e)``. An epoch therefore depends only on the weights and optimiser
state it starts from, so a run resumed from its last epoch checkpoint ends exactly where an uninterrupted
run would, and the checkpoint needs no RNG dump beyond ``(seed, epoch)``.

A share of the training images (``TrainConfig.validation``, drawn per class by ``(seed, VALIDATION)``) is held
out: training never sees them, and each evaluated epoch measures accuracy on them besides the test split's.
Models are chosen on that validation accuracy and reported on the test accuracy, which then stays unbiased.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.core.errors import InputError, WorkFailed
from engine.core.files import atomic_path
from engine.core.precision import Precision
from engine.core.profiles import Profile
from engine.core.seeds import TrainStream, derive_seed, seeded
from engine.core.space import DEFAULT_VALIDATION, Genotype, Space, validation_error
from engine.data.encoding import encode
from engine.data.images import ImageData, ImageSplit, augment
from engine.nn.devices import keep_freed_memory, resolve_device
from engine.nn.network import SpikingNet, build_network, spike_layers


@dataclass(frozen=True)
class TrainConfig:
    """Reference defaults (SNASNet): SGD 0.1, momentum 0.9, cosine to 1 % of the rate, batch 64.

    ``weight_decay`` defaults to the paper's intent, 5e-4; SNASNet's code passed it into SGD's dampening
    slot, so it effectively trained with 0.

    ``validation`` is the share of each class's training images held out (``validation_split``; 0: none).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    final_lr_ratio: float = 0.01
    precision: Precision = Precision.FP32
    eval_every: int = 1
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    validation: float = DEFAULT_VALIDATION

    def __post_init__(self) -> None:
        problem = validation_error(self.validation)
        if problem is not None:
            raise InputError(f"training setting validation: {problem}")
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": 0 < self.lr < math.inf,
            "eval_every": self.eval_every >= 1,
            "weight_decay": self.weight_decay >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise InputError(f"training setting {name}={getattr(self, name)!r} is out of range")
        object.__setattr__(self, "precision", Precision.parse(self.precision))


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    test_accuracy: float | None  # None when this epoch was not evaluated
    firing_rate: float | None
    seconds: float
    lr: float
    val_accuracy: float | None = None  # on the held-out training images; None unevaluated or without any


@dataclass
class TrainResult:
    model: SpikingNet
    epochs: list[EpochRecord] = field(default_factory=list)
    device: str = "cpu"
    seconds: float = 0.0
    stopped: bool = False
    validation: dict = field(default_factory=dict)  # the held-out split: fraction, images, seed (model files keep it)

    def _last_evaluated(self) -> EpochRecord | None:
        return next((e for e in reversed(self.epochs) if e.test_accuracy is not None), None)

    @property
    def accuracy(self) -> float | None:
        """Test accuracy after the last evaluated epoch: what a model's accuracy is reported as."""
        last = self._last_evaluated()
        return last.test_accuracy if last else None

    @property
    def val_accuracy(self) -> float | None:
        """Validation accuracy after the same epoch: what models are chosen on (None without a validation split)."""
        last = self._last_evaluated()
        return last.val_accuracy if last else None


class TrainingDiverged(WorkFailed):
    """The loss became NaN or infinite; the last epoch checkpoint is kept."""


class TrainStateMismatch(InputError):
    """A resume state file that belongs to another training (or cannot be read): it is never resumed."""


# The layout of the resume state; a file of another version is refused rather than guessed at.
STATE_FORMAT = "spikernel-train-state/2"


def training_identity(
    genotype: Genotype, kernel_set: Space, profile: Profile, data: ImageData, config: TrainConfig
) -> dict:
    """Everything that decides what a training computes, the device aside (a run may resume elsewhere).

    A state file records it; a resume must present the same, so no run continues another one's weights.
    """
    return {
        "format": STATE_FORMAT,
        "genotype": genotype.to_str(),
        "kernel_set": kernel_set.name,
        "profile": profile.to_dict(),
        "dataset": {
            "name": data.info.name,
            "classes": list(data.info.classes),
            "image_size": data.info.image_size,
            "train_images": len(data.train),
            "test_images": len(data.test),
        },
        # plain values only: the state loads with weights_only, which refuses any other class. No validation
        # share is what a state written before there were validation splits trained with: it resumes.
        "config": {
            k: str(v) if isinstance(v, Precision) else v
            for k, v in asdict(config).items()
            if k != "device" and not (k == "validation" and v == 0)
        },
    }


def _differences(recorded, wanted, prefix: str = "") -> list[str]:
    """``key: recorded -> wanted`` for every leaf that differs (nested dicts by dotted key)."""
    if isinstance(recorded, dict) and isinstance(wanted, dict):
        return [
            d
            for k in sorted(set(recorded) | set(wanted), key=str)
            for d in _differences(recorded.get(k), wanted.get(k), f"{prefix}{k}.")
        ]
    if recorded == wanted:
        return []
    return [f"{prefix.rstrip('.')} {_short(recorded)} (now {_short(wanted)})"]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def data_fingerprint(data: ImageData) -> dict:
    """The training and test images as read (``ImageSplit.fingerprint``): a state records them, so a training
    resumes only on the images it started with (names and counts alone miss an image replaced in place)."""
    return {"train": data.train.fingerprint(), "test": data.test.fingerprint()}


def _data_change(recorded, fingerprint: dict) -> str | None:
    """Which images changed since a state recorded ``recorded``, and how, in words; None when none did."""
    for split, words in (("train", "training"), ("test", "test")):
        was, now = recorded.get(split) if isinstance(recorded, dict) else None, fingerprint[split]
        if was == now:
            continue
        if not isinstance(was, dict) or was.get("names") != now["names"]:
            how = "other file names or labels"
        elif was.get("bytes") != now["bytes"]:
            how = f"the same names, {was.get('bytes')} bytes then, {now['bytes']} now"
        else:
            how = "the same names and sizes, other content"
        return f"the {words} images changed since this training started ({how})"
    return None


def _load_state(path: Path, identity: dict, fingerprint: dict, device: torch.device) -> dict:
    """The state in ``path`` if it continues exactly the training ``identity`` describes, on the images of
    ``fingerprint``; else refused."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a torn, foreign or pickled-object file: never guessed at
        raise TrainStateMismatch(
            f"{path} is not a readable training state ({type(exc).__name__}); delete it to start this training afresh"
        ) from None
    recorded = state.get("identity") if isinstance(state, dict) else None
    if not isinstance(recorded, dict):
        raise TrainStateMismatch(f"{path} does not say which training it belongs to; delete it to start afresh")
    differences = _differences(recorded, identity)
    if differences:
        shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more" if len(differences) > 4 else "")
        raise TrainStateMismatch(
            f"{path} holds another training ({shown}); it was not resumed: delete it, or write elsewhere"
        )
    # A state written before fingerprints has no "data": it resumes, as its identity (the dataset's name, classes
    # and counts) allows. Its images have most likely not changed, and refusing would throw away every training
    # interrupted across the upgrade; the state it goes on to write records the fingerprint, checked from then on.
    change = _data_change(state["data"], fingerprint) if "data" in state else None
    if change:
        raise TrainStateMismatch(f"{change}; {path} was not resumed: restore them, or delete it to start afresh")
    return state


# progress(epoch, batch, batches, loss, accuracy): loss and accuracy are running means over the epoch.
TrainProgress = Callable[[int, int, int, float, float], None]


class DeviceImages:
    """A split's images as one uint8 tensor on the training device; batches are cut from it."""

    def __init__(self, split: ImageSplit, device: torch.device, indices: torch.Tensor | None = None) -> None:
        images, labels = split.tensors()
        if indices is not None:  # a part of the split (training or validation images)
            images, labels = images[indices], labels[indices]
        self.images, self.labels = images.to(device), labels.to(device)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, order: torch.Tensor | None = None):
        n = len(self)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
            yield self.images[idx].float().div_(255), self.labels[idx]


def validation_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(training, validation)`` indices into a training split's ``labels``, each in ascending order.

    ``fraction`` of each class's images (rounded) is held out, drawn by ``(seed, TrainStream.VALIDATION)`` with
    numpy's generator (the same on every platform and device); each class keeps at least one training image.
    """
    problem = validation_error(fraction)
    if problem is not None:
        raise InputError(problem)
    values = labels.cpu().numpy()
    rng = np.random.default_rng(validation_seed(seed))
    held = [np.empty(0, dtype=np.int64)]
    for label in np.unique(values):
        members = np.flatnonzero(values == label)
        count = min(math.floor(fraction * len(members) + 0.5), len(members) - 1)
        held.append(rng.permutation(members)[:count])
    validation = np.sort(np.concatenate(held))
    kept = np.ones(len(values), dtype=bool)
    kept[validation] = False
    return torch.from_numpy(np.flatnonzero(kept)), torch.from_numpy(validation)


def validation_seed(seed: int) -> int:
    """The seed that picks a training's validation images (recorded in model files)."""
    return derive_seed(seed, TrainStream.VALIDATION)


def eval_seed(seed: int, epoch: int) -> int:
    """The rate-encoding seed of epoch ``epoch``'s test evaluation (stored in checkpoints to reproduce it)."""
    return derive_seed(seed, TrainStream.EVALUATION, epoch)


def _generator(device: torch.device, seed: int, stream: TrainStream, *indices: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, stream, *indices))


def evaluate(
    model: nn.Module,
    images: DeviceImages,
    data: ImageData,
    profile: Profile,
    *,
    seed: int,
    batch_size: int = 256,
    precision: Precision = Precision.FP32,
) -> tuple[float, float]:
    """``(accuracy, firing_rate)`` on ``images`` in eval mode; the rate-encoding spikes come from ``seed``."""
    device = images.labels.device
    was_training = model.training
    model.eval()
    correct, spikes, neurons = 0, 0.0, 0

    def count(_module, _inputs, out):
        nonlocal spikes, neurons
        spikes += float(out.sum()) * _module.fanout
        neurons += out.numel() * _module.fanout

    precision = Precision.parse(precision)
    hooks = [m.register_forward_hook(count) for m in spike_layers(model)]
    try:
        with seeded(device, seed), torch.no_grad():
            for x, y in images.batches(batch_size):
                with precision.autocast(device):
                    out = model(encode(profile.encoding, x, profile.timesteps, data.info))
                correct += int((out.argmax(1) == y).sum())
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return correct / len(images), spikes / max(neurons, 1)


def _lr_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs, eta_min=config.lr * config.final_lr_ratio
    )


def _save_state(
    path: Path, identity: dict, fingerprint: dict, model, optimizer, scheduler, epoch: int, records, config
) -> None:
    """Resume state (what training it is, on which images, weights, optimiser, scheduler, epoch, history),
    written atomically."""
    state = {
        "identity": identity,
        "data": fingerprint,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "rng": {"seed": config.seed, "next_epoch": epoch + 1},
        "records": [asdict(r) for r in records],
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train(
    genotype: Genotype,
    kernel_set: Space,
    profile: Profile,
    data: ImageData,
    config: TrainConfig = TrainConfig(),
    *,
    state_path: Path | None = None,
    progress: TrainProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train one cell on the training images ``config.validation`` leaves (the rest measure ``val_accuracy``).
    With ``state_path``, resume from it when present and update it after every epoch.

    ``on_epoch`` receives each finished epoch after its checkpoint is written (to record it elsewhere).

    ``should_stop`` is polled between batches; a stopped run keeps its last completed epoch.

    A state file is resumed only when it records this very training (cell, kernel set, profile, dataset,
    every setting but the device, and the state format) on the same images (``data_fingerprint``); otherwise
    ``TrainStateMismatch`` says what differs.
    """
    device = resolve_device(config.device)
    if device.type == "cpu":
        keep_freed_memory()
    started = time.perf_counter()
    with seeded(device, derive_seed(config.seed, TrainStream.INIT)):
        model = build_network(genotype, kernel_set, profile, data.info, device=device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = _lr_schedule(optimizer, config)
    records: list[EpochRecord] = []
    first_epoch = 1
    identity = training_identity(genotype, kernel_set, profile, data, config)
    fingerprint = data_fingerprint(data) if state_path is not None else {}
    if state_path is not None and state_path.exists():
        state = _load_state(state_path, identity, fingerprint, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        records = [EpochRecord(**r) for r in state["records"]]
        first_epoch = state["epoch"] + 1

    kept, held = validation_split(data.train.tensors()[1], config.validation, config.seed)
    train_images, test_images = DeviceImages(data.train, device, kept), DeviceImages(data.test, device)
    val_images = DeviceImages(data.train, device, held) if len(held) else None
    batches = math.ceil(len(train_images) / config.batch_size)
    split = {"fraction": config.validation, "images": len(held), "seed": validation_seed(config.seed)}
    result = TrainResult(model, records, device=str(device), validation=split)
    for epoch in range(first_epoch, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        gen = _generator(device, config.seed, TrainStream.SHUFFLE, epoch)
        order = torch.randperm(len(train_images), generator=gen, device=device)
        loss_sum, correct, seen = 0.0, 0, 0
        with seeded(device, derive_seed(config.seed, TrainStream.EPOCH, epoch)):
            for b, (x, y) in enumerate(train_images.batches(config.batch_size, order), 1):
                if should_stop is not None and should_stop():
                    result.stopped = True
                    break
                x = augment(x, data.info, gen)
                with config.precision.autocast(device):
                    out = model(encode(profile.encoding, x, profile.timesteps, data.info))
                    loss = F.cross_entropy(out.float(), y)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss became {loss.item()} in epoch {epoch}, batch {b}; "
                        f"kept the checkpoint of epoch {epoch - 1}. Try a lower learning rate."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(y)
                correct += int((out.argmax(1) == y).sum())
                seen += len(y)
                if progress is not None:
                    progress(epoch, b, batches, loss_sum / seen, correct / seen)
        if result.stopped:
            break
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        test_acc = rate = val_acc = None
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            settings = {
                "seed": eval_seed(config.seed, epoch),
                "batch_size": config.eval_batch_size,
                "precision": config.precision,
            }
            test_acc, rate = evaluate(model, test_images, data, profile, **settings)
            if val_images is not None:
                val_acc = evaluate(model, val_images, data, profile, **settings)[0]
        records.append(
            EpochRecord(epoch, loss_sum / seen, correct / seen, test_acc, rate, time.perf_counter() - t0, lr, val_acc)
        )
        if state_path is not None:
            _save_state(state_path, identity, fingerprint, model, optimizer, scheduler, epoch, records, config)
        if on_epoch is not None:
            on_epoch(records[-1])
    result.seconds = time.perf_counter() - started
    return result
