"""The deliverable model: one ``.safetensors`` file that rebuilds itself.

safetensors holds tensors and a string-to-string header, nothing executable, so a downloaded model is
safe to open. The header's ``spikernel`` entry is JSON with everything needed to rebuild and use the
network; ``weights_sha256`` covers every tensor, so an edited weight or header is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .data import DatasetInfo
from .network import SpikingNet, build_network
from .profiles import Macro, Profile, ScoreConfig
from .space import Genotype, KernelSet

FORMAT = "spikernel-model/1"


class CheckpointError(ValueError):
    """A file that is not a complete, untampered SpiKernel model."""


@dataclass(frozen=True)
class LoadedModel:
    model: SpikingNet
    meta: dict
    genotype: Genotype
    kernel_set: KernelSet
    profile: Profile
    data: DatasetInfo


def _weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(path: Path, model: SpikingNet, meta: dict) -> None:
    """Write ``model`` with ``meta`` (genotype, kernel_set, profile, dataset, ... see ``save_trained``).

    Written to a temporary name and renamed, so a kill never leaves a half file under ``path``.
    """
    import safetensors

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        **meta,
        "format": FORMAT,
        "versions": {
            "spikernel": __version__,
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
            "python": platform.python_version(),
        },
    }
    header = {"spikernel": json.dumps(meta, sort_keys=True), "weights_sha256": _weights_digest(tensors)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=header)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_trained(
    path: Path,
    model: SpikingNet,
    *,
    genotype: Genotype,
    kernel_set: KernelSet,
    profile: Profile,
    info: DatasetInfo,
    accuracy: float | None,
    seed: int,
    epochs: int,
    extra: dict | None = None,
) -> None:
    """Save a trained network with everything needed to rebuild it and reproduce its test accuracy."""
    from .memory import footprint
    from .train import eval_seed

    fp = footprint(genotype, kernel_set, profile, info)
    meta = {
        "genotype": genotype.to_str(),
        "kernel_set": kernel_set.name,
        "profile": profile.to_dict(),
        "dataset": {
            "name": info.name,
            "macro": info.macro,
            "classes": list(info.classes),
            "image_size": info.image_size,
            "mean": list(info.mean),
            "std": list(info.std),
            "crop_padding": info.crop_padding,
        },
        "encoding": profile.encoding,
        "timesteps": profile.timesteps,
        "accuracy": accuracy,
        "params": fp.params,
        "params_torch": fp.params_torch,
        "seed": seed,
        "epochs": epochs,
        "eval_seed": eval_seed(seed, epochs),
        **(extra or {}),
    }
    save_model(path, model, meta)


def _profile_from_dict(d: dict) -> Profile:
    return Profile(
        **{
            **d,
            "macros": {k: Macro(**v) for k, v in d["macros"].items()},
            "score": ScoreConfig(**d["score"]),
        }
    )


def read_metadata(path: Path) -> dict:
    """The checked ``spikernel`` header of a model file, without loading its weights."""
    return _open(Path(path))[0]


def _open(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt): {exc}") from None
    if "spikernel" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a SpiKernel model (no spikernel metadata)")
    try:
        meta = json.loads(header["spikernel"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path} has damaged SpiKernel metadata") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}; this version reads {FORMAT}")
    if header.get("weights_sha256") != _weights_digest(tensors):
        raise CheckpointError(f"{path} was modified after it was saved: its weights do not match their checksum")
    return meta, tensors


def load_model(path: Path | str, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the network a file describes and load its weights (eval mode)."""
    path = Path(path)
    meta, tensors = _open(path)
    try:
        genotype = Genotype.from_str(meta["genotype"])
        kernel_set = KernelSet.parse(meta["kernel_set"])
        profile = _profile_from_dict(meta["profile"])
        d = meta["dataset"]
        shape = DatasetInfo(
            d["name"], d["macro"], tuple(d["classes"]), d["image_size"], tuple(d["mean"]), tuple(d["std"]),
            d["crop_padding"],
        )
        model = build_network(genotype, kernel_set, profile, shape, device=device)
        model.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} does not describe a network this version can rebuild: {exc}") from None
    return LoadedModel(model.eval(), meta, genotype, kernel_set, profile, shape)
