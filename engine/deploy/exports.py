"""The files delivered after the choice: NIR, and 8- or 4-bit integer weights.

**Quantisation** (``quantize_state``, ``write_quantized``): weights of every convolution and linear layer,
per output channel, symmetric, round to nearest: ``q = round(w / s)``, ``s = max|w| / (2^(b-1) - 1)``, so
8 bits give integers in [-127, 127] and 4 bits in [-7, 7] (two per byte in the file). Biases,
BatchNorm and neuron parameters stay fp32. Per-channel scaling commutes with BatchNorm's per-channel
scale, so the same integers serve the folded NIR graph. ``load_model`` dequantises such a file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.data.images import DatasetError, load_dataset
from engine.deploy.nir import DeployError, _loaded, check_nir, read_nir, write_nir
from engine.train.checkpoint import LoadedModel, save_model
from engine.train.quantize import QUANT_SCHEME, quantize_tensor, quantized_model, quantized_weights
from engine.train.training import DeviceImages, evaluate

EXPORT_FORMATS = ("nir", "int8", "int4")


# ------------------------------------------------------------------------------ integer-weight files


class _Tensors:
    """What ``checkpoint.save_model`` needs of a model: its tensors by name."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.tensors


def write_quantized(model: LoadedModel | str | Path, bits: int, out: str | Path, *, accuracy: float | None) -> Path:
    """Write the model with ``bits``-bit integer weights and their scales (``load_model`` reads it back).

    ``accuracy`` is the test accuracy measured at this width (``measure``); the fp32 one is kept beside it.
    """

    loaded = _loaded(model)
    state = {k: v.detach().cpu() for k, v in loaded.model.state_dict().items()}
    names = quantized_weights(loaded.model)
    for name in names:
        q, scale = quantize_tensor(state.pop(name), bits)
        state[f"{name}.q"], state[f"{name}.scale"] = q, scale
    meta = {
        **{k: v for k, v in loaded.meta.items() if k not in ("format", "versions")},
        "accuracy": accuracy,
        "accuracy_fp32": loaded.meta.get("accuracy_fp32", loaded.meta.get("accuracy")),
        "val_accuracy": None,  # measured with the fp32 weights only: kept as such
        **({"val_accuracy_fp32": loaded.meta["val_accuracy"]} if loaded.meta.get("val_accuracy") is not None else {}),
        "quantization": {"bits": bits, "scheme": QUANT_SCHEME, "weights": names},
    }
    if loaded.meta.get("quantization") is not None:
        raise DeployError("this model is already quantised: export from the fp32 model")
    save_model(Path(out), _Tensors(state), meta)
    return Path(out)


# ------------------------------------------------------------------------------------ files to deliver


def measure_quantized(loaded: LoadedModel, bits: int) -> float:
    """Test accuracy at ``bits`` on the model's own dataset, encoded as its recorded accuracy was."""

    data = load_dataset(loaded.data.name)
    if tuple(data.info.classes) != loaded.data.classes:
        raise DeployError(f"dataset {loaded.data.name} no longer has the classes this model was trained on")
    images = DeviceImages(data.test, torch.device("cpu"))
    return evaluate(quantized_model(loaded.model, bits), images, data, loaded.profile, seed=loaded.meta["eval_seed"])[0]


def export(model: LoadedModel | str | Path, fmt: str, out: str | Path, *, accuracy: float | None = None) -> Path:
    """Write ``model`` as ``fmt``: ``nir`` (the graph), ``int8`` or ``int4`` (integer weights; ``accuracy`` is
    the one measured at that width, measured here on the test set when not given). Nothing is written when
    the model or the format is refused."""
    if fmt not in EXPORT_FORMATS:
        raise DeployError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    loaded = _loaded(model)
    if fmt == "nir":
        return write_nir(loaded, out)
    bits = int(fmt.removeprefix("int"))
    if accuracy is None:
        accuracy = measure_quantized(loaded, bits)
    return write_quantized(loaded, bits, out, accuracy=accuracy)


def check_file(model: LoadedModel | str | Path, nir_file: str | Path, *, images: int = 8) -> str:
    """Read a written NIR file back and compare it with the engine on the first test images of the model's
    dataset (random images when the dataset cannot be read here). One line saying what was found."""

    loaded = _loaded(model)
    try:
        x = load_dataset(loaded.data.name).test.tensors()[0][:images].float() / 255
        where = f"{len(x)} test images of {loaded.data.name}"
    except (DatasetError, OSError) as exc:
        size = loaded.data.image_size
        x = torch.rand(images, 3, size, size, generator=torch.Generator().manual_seed(0))
        where = f"{images} random images ({exc})"
    report = check_nir(loaded, x, graph=read_nir(nir_file), dtype=torch.float32)
    verdict = "equal to the engine" if report.ok and report.spikes_equal else "DIFFERS from the engine"
    return f"checked {nir_file} read back with nirtorch/snntorch on {where}: {verdict}: {report.summary()}"
