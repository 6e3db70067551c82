"""The deliverable model: one ``.safetensors`` file that rebuilds itself.

safetensors holds tensors and a string-to-string header, nothing executable, so a downloaded model is
safe to open. The header's ``spikernel`` entry is JSON with everything needed to rebuild and use the
network; ``sha256`` covers that JSON and every tensor, so an edited weight or metadata field is refused.
That checksum is an integrity check anyone can recompute, not a signature, so the metadata is then checked
against one declaration, ``METADATA`` (every field's type and range), before anything reads it; and the
network it describes must be one a profile builds, whose tensors the file holds, before anything is allocated.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine import __version__
from engine.core.errors import InputError
from engine.core.files import atomic_path
from engine.core.footprint import footprint
from engine.core.precision import PRECISIONS
from engine.core.profiles import PROFILES, Encoding, Macro, Profile, ScoreConfig
from engine.core.schema import check, choice, entries, flag, items, maybe, number, obj, text, whole
from engine.core.space import MAX_EPOCHS, MAX_SEED, Genotype, Space
from engine.data.catalogue import MAX_SPEC, NAME_MAX
from engine.data.images import DatasetInfo
from engine.nn.network import SpikingNet, build_network
from engine.train.quantize import QUANT_BITS, dequantize, quantized_weights
from engine.train.training import eval_seed

FORMAT = "spikernel-model/2"  # 2: the checksum covers the metadata too
MAX_CLASSES = 100_000
MAX_IMAGE_SIZE = 1024
NAME = 100  # characters of a name: a cell, a kernel set, a setting, a layer, a version
MAX_COUNT = 2**63 - 1  # any other count or width (torch's int64): the profiles and the tensors bound them
MAX_SCORE = 1e9  # a search score, log |det K| of a spike-code kernel: far below this, -inf when nothing fired

# The metadata's one declaration (engine.core.schema): every field's type and range, checked before any is read.
ACCURACY = maybe(number(0, 1))
MACRO = obj(
    channels=whole(1, MAX_COUNT), hidden=whole(1, MAX_COUNT), pool=whole(1, MAX_COUNT), group=whole(1, MAX_COUNT)
)
SCORE = obj(
    batch_size=whole(1, MAX_COUNT),
    batches=whole(1, MAX_COUNT),
    draws=whole(1, MAX_COUNT),
    shared=flag(),
    train_mode=flag(),
    reset_between_batches=flag(),
    count_silent=flag(),
    step_through_time=flag(),
    precision=choice(PRECISIONS),
)
PROFILE = obj(  # Profile.to_dict()
    name=text(NAME),
    description=text(MAX_SPEC),
    reduced=flag(),
    macros=entries(MACRO, 100),
    score=SCORE,
    timesteps=whole(1, MAX_COUNT),
    encoding=choice(get_args(Encoding)),
    dropout=number(0, 1),
    epochs=whole(1, MAX_EPOCHS),
    batch_size=whole(1, MAX_COUNT),
    linear_gain=maybe(number(0, 1e6)),
    pool_counts_padding=flag(),
)
METADATA = obj(
    format=choice([FORMAT]),
    versions=obj(spikernel=text(NAME), torch=text(NAME), safetensors=text(NAME), python=text(NAME)),
    genotype=text(NAME),
    kernel_set=text(NAME),
    profile=PROFILE,
    dataset=obj(  # DatasetInfo
        name=text(MAX_SPEC),
        macro=text(NAME),
        classes=items(text(NAME_MAX), 2, MAX_CLASSES),
        image_size=whole(1, MAX_IMAGE_SIZE),
        mean=items(number(0, 1), 3, 3),  # of pixels in [0, 1]
        std=items(number(1e-6, 1), 3, 3),
        crop_padding=whole(0, MAX_IMAGE_SIZE),
    ),
    encoding=choice(get_args(Encoding)),
    timesteps=whole(1, MAX_COUNT),
    accuracy=ACCURACY,
    # The held-out split (TrainResult.validation) and the accuracy on it; absent in files saved before splits.
    validation=maybe(obj(fraction=number(0, 1, below=True), images=whole(0, MAX_COUNT), seed=whole(0, MAX_SEED))),
    val_accuracy=ACCURACY,
    params=whole(0, MAX_COUNT),
    params_torch=whole(0, MAX_COUNT),
    seed=whole(0, MAX_SEED),
    epochs=whole(1, MAX_EPOCHS),
    eval_seed=whole(0, MAX_SEED),
    # save_trained's extra: a search job's (engine.jobs.execute) and the train command's
    setting=maybe(text(NAME)),
    search_score=maybe(number(-math.inf, MAX_SCORE)),
    device=maybe(text(NAME)),
    # an integer export's (engine.deploy.exports.write_quantized)
    accuracy_fp32=ACCURACY,
    val_accuracy_fp32=ACCURACY,
    quantization=maybe(obj(bits=choice(QUANT_BITS), scheme=text(MAX_SPEC), weights=items(text(NAME), 1, 1_000))),
)


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


def _check(ok: bool, path: Path, what: str, problem: str = "has invalid metadata") -> None:
    if not ok:
        raise CheckpointError(f"{path} {problem}: {what}")


def _describe(path: Path, meta: dict, tensors: dict[str, torch.Tensor]):
    """(genotype, kernel set, profile, dataset) of a file, refused unless every field fits ``METADATA`` and
    the fields agree: the cell is one of its kernel set's, the profile is this release's in every field that
    shapes the network, the parameter counts are that network's and the file holds its tensors. Nothing is
    allocated: the network is laid out on the meta device."""
    try:
        check(METADATA, meta)
        kernel_set = Space.parse(meta["kernel_set"])
        genotype = kernel_set.check(Genotype.from_str(meta["genotype"]))
    except ValueError as exc:
        raise CheckpointError(f"{path} has invalid metadata: {exc}") from None
    p, d = meta["profile"], meta["dataset"]
    _check(p["name"] in PROFILES, path, f"profile must be one of {', '.join(PROFILES)}")
    known, profile = PROFILES[p["name"]], _profile_from_dict(p)
    # The network is bounded by what the profiles build: only the score's settings may differ.
    shape_fields = [k for k in asdict(known) if k not in ("score", "description", "epochs", "batch_size")]
    differ = [k for k in shape_fields if getattr(profile, k) != getattr(known, k)]
    _check(not differ, path, f"profile {known.name!r} differs from this release's in {', '.join(differ)}")
    _check(
        meta["encoding"] == profile.encoding and meta["timesteps"] == profile.timesteps,
        path,
        "encoding and timesteps must be the profile's",
    )
    _check(d["macro"] in profile.macros, path, f"dataset.macro must be one of {', '.join(profile.macros)}")
    _check(d["crop_padding"] <= d["image_size"], path, "dataset.crop_padding must be at most its image_size")
    info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})  # its very fields
    split = meta.get("validation")
    _check(
        meta.get("val_accuracy") is None or (split is not None and split["images"] > 0),
        path,
        "val_accuracy needs the validation split it was measured on, one that holds images",
    )
    try:
        fp = footprint(genotype, kernel_set, profile, info)
    except ValueError as exc:
        raise CheckpointError(f"{path} has invalid metadata: {exc}") from None
    _check(
        meta["params"] == fp.params and meta["params_torch"] == fp.params_torch,
        path,
        "the parameter counts do not match the network it describes",
    )
    held = sum(t.numel() for t in tensors.values())  # the gross mismatch first, then tensor by tensor
    _check(fp.params_torch <= held, path, f"the network needs {fp.params_torch:,} parameters, the file holds {held:,}")
    with torch.device("meta"):
        layout = SpikingNet(genotype, kernel_set, profile, info)
    _check_tensors(path, tensors, layout, meta.get("quantization"))
    return genotype, kernel_set, profile, info


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor], layout: SpikingNet, quantization: dict | None):
    """The file holds exactly the tensors of ``layout``, each of its dtype and shape, so that loading them cannot
    fail half-way. A quantised weight is held as its integers (``.q``: int8, of the weight's shape, within the
    bit width) and one finite, positive fp32 scale per output channel (``.scale``): checked before anything is
    dequantised."""
    wanted = {name: (t.dtype, tuple(t.shape)) for name, t in layout.state_dict().items()}
    names = quantized_weights(layout) if quantization is not None else []
    _check(
        quantization is None or quantization["weights"] == names,
        path,
        "quantization.weights must list the network's convolution and linear weights",
    )
    for name in names:
        shape = wanted.pop(name)[1]
        wanted[f"{name}.q"], wanted[f"{name}.scale"] = (torch.int8, shape), (torch.float32, shape[:1])
    problem = "does not hold the network it describes"
    for name in sorted(wanted.keys() | tensors.keys()):
        _check(name in tensors, path, f"it has no tensor {name}", problem)
        _check(name in wanted, path, f"tensor {name!r} is none of the network's", problem)
        held, (dtype, shape) = tensors[name], wanted[name]
        _check(
            (held.dtype, tuple(held.shape)) == (dtype, shape),
            path,
            f"tensor {name} is {held.dtype} of shape {tuple(held.shape)}, the network's is {dtype} of shape {shape}",
            problem,
        )
    problem = "is not a valid quantised model"
    for name in names:
        q, scale, bits = tensors[f"{name}.q"], tensors[f"{name}.scale"], quantization["bits"]
        qmax = 2 ** (bits - 1) - 1
        within = -qmax <= int(q.min()) and int(q.max()) <= qmax  # not q.abs(): int8's abs(-128) is -128
        _check(within, path, f"its weight {name} holds integers outside {bits}-bit range", problem)
        positive = bool((scale > 0).all() and scale.isfinite().all())
        _check(positive, path, f"the scales of {name} must be finite and positive", problem)


def load_model(path: Path | str, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the network a file describes and load its weights (eval mode)."""
    path = Path(path)
    meta, tensors = _open(path)
    genotype, kernel_set, profile, shape = _describe(path, meta, tensors)
    if meta.get("quantization") is not None:  # integer weights and their scales (engine.deploy.write_quantized)
        tensors = dequantize(tensors, meta["quantization"]["weights"])
    model = build_network(genotype, kernel_set, profile, shape, device=device)
    model.load_state_dict(tensors, strict=True)
    return LoadedModel(model.eval(), meta, genotype, kernel_set, profile, shape)
