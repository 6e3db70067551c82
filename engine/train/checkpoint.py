"""The deliverable model: one ``.safetensors`` file that rebuilds itself.

safetensors holds tensors and a string-to-string header, nothing executable, so a downloaded model is
safe to open. The header's ``spikernel`` entry is JSON with everything needed to rebuild and use the
network; ``sha256`` covers that JSON and every tensor, so an edited weight or metadata field is refused.
Every field is then checked for its type and range, and the network it describes must be one a profile
builds and whose parameters the file holds, before anything is allocated.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine import __version__
from engine.core.errors import InputError
from engine.core.files import atomic_path
from engine.core.footprint import footprint
from engine.core.profiles import PROFILES, Macro, Profile, ScoreConfig
from engine.core.space import Genotype, Space
from engine.data.images import DatasetInfo
from engine.nn.network import SpikingNet, build_network
from engine.train.quantize import QuantizationError, dequantize
from engine.train.training import eval_seed

FORMAT = "spikernel-model/2"  # 2: the checksum covers the metadata too
MAX_CLASSES = 100_000
MAX_IMAGE_SIZE = 1024


class CheckpointError(InputError):
    """A file that is not a complete, untampered SpiKernel model."""


@dataclass(frozen=True)
class LoadedModel:
    model: SpikingNet
    meta: dict
    genotype: Genotype
    kernel_set: Space
    profile: Profile
    data: DatasetInfo


def _content_digest(meta_text: str, weights_digest: str) -> str:
    """The checksum of a model file: its metadata, as written, and its weights."""
    return hashlib.sha256(f"{weights_digest}\n{meta_text}".encode()).hexdigest()


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
    text = json.dumps(meta, sort_keys=True)
    header = {"spikernel": text, "sha256": _content_digest(text, _weights_digest(tensors))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def save_trained(
    path: Path,
    model: SpikingNet,
    *,
    genotype: Genotype,
    kernel_set: Space,
    profile: Profile,
    info: DatasetInfo,
    accuracy: float | None,
    seed: int,
    epochs: int,
    validation: dict | None = None,
    val_accuracy: float | None = None,
    extra: dict | None = None,
) -> None:
    """Save a trained network with everything needed to rebuild it and reproduce its test accuracy.

    ``validation`` is the training's held-out split (``TrainResult.validation``: fraction, images, seed) and
    ``val_accuracy`` the accuracy on it: what the model was chosen on, ``accuracy`` what it is reported as.
    """

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
        "validation": validation,
        "val_accuracy": val_accuracy,
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
    """The checked ``spikernel`` header of a model file (checksum, every field), without building its network."""
    path = Path(path)
    meta, tensors = _open(path)
    _describe(path, meta, tensors)
    return meta


def _open(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist")
    except (OSError, ValueError) as e:  # a name too long, a NUL byte
        raise CheckpointError(f"{str(path)[:200]!r} cannot be opened: {getattr(e, 'strerror', None) or e}") from None
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
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has damaged SpiKernel metadata (not an object)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}; this version reads {FORMAT}")
    if header.get("sha256") != _content_digest(header["spikernel"], _weights_digest(tensors)):
        raise CheckpointError(
            f"{path} was modified after it was saved: its metadata and weights do not match their checksum"
        )
    return meta, tensors


def _check(ok: bool, path: Path, what: str) -> None:
    if not ok:
        raise CheckpointError(f"{path} has invalid metadata: {what}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _describe(path: Path, meta: dict, tensors: dict[str, torch.Tensor]):
    """Every field checked (type, range) and the network bounded by the profiles and by the file's own
    tensors, without allocating anything: (genotype, kernel set, profile, dataset)."""

    required = (
        "genotype",
        "kernel_set",
        "profile",
        "dataset",
        "encoding",
        "timesteps",
        "accuracy",
        "params",
        "params_torch",
        "seed",
        "epochs",
        "eval_seed",
    )
    missing = [k for k in required if k not in meta]
    _check(not missing, path, f"missing {', '.join(missing)}")
    try:
        kernel_set = Space.parse(meta["kernel_set"]) if isinstance(meta["kernel_set"], str) else None
        genotype = (
            kernel_set.check(Genotype.from_str(meta["genotype"]))
            if isinstance(meta["genotype"], str) and kernel_set is not None
            else None
        )
    except ValueError as exc:
        raise CheckpointError(f"{path} has invalid metadata: {exc}") from None
    _check(genotype is not None and kernel_set is not None, path, "genotype and kernel_set must be text")

    p = meta["profile"]
    _check(isinstance(p, dict) and p.get("name") in PROFILES, path, f"profile must be one of {', '.join(PROFILES)}")
    known = PROFILES[p["name"]]
    try:
        profile = _profile_from_dict(p)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path} has invalid metadata: profile: {exc}") from None
    # The network is bounded by what the profiles build: only the score's settings may differ.
    shape_fields = [k for k in asdict(known) if k not in ("score", "description", "epochs", "batch_size")]
    differ = [k for k in shape_fields if getattr(profile, k) != getattr(known, k)]
    _check(not differ, path, f"profile {known.name!r} differs from this release's in {', '.join(differ)}")
    _check(
        meta["encoding"] == profile.encoding and meta["timesteps"] == profile.timesteps,
        path,
        "encoding and timesteps must be the profile's",
    )

    d = meta["dataset"]
    _check(isinstance(d, dict), path, "dataset must be an object")
    keys = ("name", "macro", "classes", "image_size", "mean", "std", "crop_padding")
    _check(all(k in d for k in keys), path, f"dataset needs {', '.join(keys)}")
    _check(isinstance(d["name"], str) and len(d["name"]) <= 4096, path, "dataset name must be text")
    _check(d["macro"] in profile.macros, path, f"dataset macro must be one of {', '.join(profile.macros)}")
    classes = d["classes"]
    _check(
        isinstance(classes, list) and 2 <= len(classes) <= MAX_CLASSES and all(isinstance(c, str) for c in classes),
        path,
        f"dataset classes must be 2 to {MAX_CLASSES:,} names",
    )
    size = d["image_size"]
    _check(_is_int(size) and 1 <= size <= MAX_IMAGE_SIZE, path, f"image_size must be 1 to {MAX_IMAGE_SIZE}")
    _check(_is_int(d["crop_padding"]) and 0 <= d["crop_padding"] <= size, path, "crop_padding out of range")
    for key in ("mean", "std"):
        v = d[key]
        _check(isinstance(v, list) and len(v) == 3 and all(_is_number(x) for x in v), path, f"{key} must be 3 numbers")
    _check(all(x > 0 for x in d["std"]), path, "std must be positive")
    info = DatasetInfo(
        d["name"], d["macro"], tuple(classes), size, tuple(d["mean"]), tuple(d["std"]), d["crop_padding"]
    )

    for key in ("accuracy", "val_accuracy"):  # a file saved before validation splits has no val_accuracy
        acc = meta.get(key)
        _check(acc is None or (_is_number(acc) and 0 <= acc <= 1), path, f"{key} must be empty or from 0 to 1")
    _check_validation(path, meta.get("validation"), meta.get("val_accuracy"))
    for key, low in (("seed", 0), ("eval_seed", 0), ("epochs", 1)):
        _check(_is_int(meta[key]) and meta[key] >= low, path, f"{key} must be a whole number of at least {low}")
    try:
        fp = footprint(genotype, kernel_set, profile, info)
    except ValueError as exc:
        raise CheckpointError(f"{path} has invalid metadata: {exc}") from None
    _check(
        meta["params"] == fp.params and meta["params_torch"] == fp.params_torch,
        path,
        "the parameter counts do not match the network it describes",
    )
    held = sum(t.numel() for t in tensors.values())
    _check(fp.params_torch <= held, path, f"the network needs {fp.params_torch:,} parameters, the file holds {held:,}")
    return genotype, kernel_set, profile, info


def _check_validation(path: Path, split, val_accuracy) -> None:
    """The held-out split a file records (absent in files saved before there was one): its share of the
    training images, how many that was and the seed that drew them."""
    if split is None:
        _check(val_accuracy is None, path, "val_accuracy needs the validation split it was measured on")
        return
    keys = ("fraction", "images", "seed")
    _check(isinstance(split, dict) and all(k in split for k in keys), path, f"validation needs {', '.join(keys)}")
    fraction = split["fraction"]
    _check(_is_number(fraction) and 0 <= fraction < 1, path, "validation fraction must be from 0 to below 1")
    for key in ("images", "seed"):
        _check(_is_int(split[key]) and split[key] >= 0, path, f"validation {key} must be a whole number of at least 0")
    _check(val_accuracy is None or split["images"] > 0, path, "val_accuracy needs a validation split that holds images")


def load_model(path: Path | str, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the network a file describes and load its weights (eval mode)."""
    path = Path(path)
    meta, tensors = _open(path)
    genotype, kernel_set, profile, shape = _describe(path, meta, tensors)
    if "quantization" in meta:  # integer weights and their scales (engine.deploy.nir.write_quantized)
        try:
            tensors = dequantize(tensors, meta["quantization"])
        except (QuantizationError, AttributeError) as exc:
            raise CheckpointError(f"{path} is not a valid quantised model: {exc}") from None
    try:
        model = build_network(genotype, kernel_set, profile, shape, device=device)
        model.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} does not describe a network this version can rebuild: {exc}") from None
    return LoadedModel(model.eval(), meta, genotype, kernel_set, profile, shape)
