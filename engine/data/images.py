"""Image datasets for the search: loading, batched augmentation and normalisation.

Every dataset comes back as an ``ImageData``: two ``ImageSplit`` s of raw uint8 images plus a
``DatasetInfo`` carrying what training needs to treat them correctly (normalisation statistics, crop
padding and which SNASNet macro-network fits). Augmentation and normalisation are deliberately not part
of the splits: they run batched on the training device (``augment``, ``normalize``), so a whole epoch
can live on the GPU as one uint8 tensor instead of going through per-sample PIL transforms.

Datasets are named by a spec string (see ``list_datasets``): ``sample`` (the offline CIFAR-10 subset
bundled with the project), ``cifar10``, ``cifar100``, ``tinyimagenet`` and ``folder:<path>``. The specs, the
data roots, the checks and the shapes are ``engine.data.catalogue``'s (no torch there); this module adds the
images as tensors.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

# Everything about a dataset that needs no tensors lives in ``engine.data.catalogue`` (torch-free, for the
# dashboard and the store); what reading images needs of it comes from there.
from engine.data.catalogue import (
    CIFAR10_STATS,
    CIFAR100_STATS,
    IMAGENET_STATS,
    SAMPLE_ARCHIVE,
    DatasetError,
    DatasetInfo,
    Roots,
    _check_same_classes,
    _class_dirs,
    _confined,
    _ImageRef,
    _images_under,
    _is_image,
    _padding,
    _parse_spec,
    _reachable,
    _read_confined,
    check_classes,
    read_folder,
    read_roots,
    read_tinyimagenet,
)

# --------------------------------------------------------------------------------------- splits


def _read(ref: _ImageRef) -> bytes:
    return ref.payload if ref.payload is not None else _read_confined(ref.origin, ref.roots)


def _decode(ref: _ImageRef, payload: bytes, size: int) -> np.ndarray:
    """Decodes one image's bytes to a ``[size, size, 3]`` uint8 RGB array.

    Images of another size are scaled so their shorter side is ``size`` and center-cropped, so one
    odd image in a folder does not break stacking.
    """
    try:
        with Image.open(io.BytesIO(payload)) as img:
            rgb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read image {ref.origin}: {e}") from e
    if rgb.size != (size, size):
        rgb = ImageOps.fit(rgb, (size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb)


class ImageSplit(torch.utils.data.Dataset):
    """One split of a dataset. Items are ``(uint8 tensor [3, H, W], int label)``.

    No augmentation and no normalisation happen here: training applies ``augment`` and ``normalize``
    batched on its own device. Images are decoded lazily; ``tensors`` decodes the whole split once and
    keeps the result, after which items come from that cache. Splits come from ``load_dataset``, or
    from ``from_tensors`` for images already in memory.
    """

    def __init__(self, refs: Sequence[_ImageRef], labels: Sequence[int], image_size: int) -> None:
        if len(refs) != len(labels):
            raise DatasetError(f"{len(refs)} images but {len(labels)} labels")
        self._refs = list(refs)
        self._labels = torch.as_tensor(labels, dtype=torch.int64)
        self._size = image_size
        self._images: torch.Tensor | None = None
        self._fingerprint: dict | None = None

    @classmethod
    def from_tensors(cls, images: torch.Tensor, labels: torch.Tensor) -> ImageSplit:
        """Wraps images that are already decoded (torchvision's CIFAR arrays, synthetic test data).

        Args:
            images: uint8 ``[N, 3, S, S]``.
            labels: integer ``[N]``.
        """
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise DatasetError(f"images must be uint8 [N, 3, S, S], got {images.dtype} {list(images.shape)}")
        if images.shape[2] != images.shape[3]:
            raise DatasetError(f"images must be square, got {images.shape[2]}x{images.shape[3]}")
        if labels.shape != images.shape[:1]:
            raise DatasetError(f"{images.shape[0]} images but labels of shape {list(labels.shape)}")
        split = cls([], [], images.shape[2])
        split._images = images.contiguous()
        split._labels = labels.to(torch.int64)
        return split

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        label = int(self._labels[i])
        if self._images is not None:
            return self._images[i], label
        ref = self._refs[i]
        pixels = np.array(_decode(ref, _read(ref), self._size))  # a writable copy for torch
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), label

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as uint8 ``[N, 3, S, S]`` and labels as int64 ``[N]``, decoded once and cached.

        Decoding is serial on purpose. At 32-64 px most of Pillow's time per image goes to parsing
        headers in Python with the GIL held (the GIL-free decode itself is about a fifth), so a
        thread pool only adds contention: on a 16-core host the 5,000-image sample took 0.46 s with
        one thread, 0.73 s with two and 1.05 s with eight.
        """
        if self._images is None:
            images = torch.empty((len(self._refs), 3, self._size, self._size), dtype=torch.uint8)
            out = images.numpy()
            names, content, size = hashlib.blake2b(digest_size=16), hashlib.blake2b(digest_size=16), 0
            for j, (ref, label) in enumerate(zip(self._refs, self._labels.tolist(), strict=True)):
                payload = _read(ref)
                names.update(f"{label}/{os.path.basename(ref.origin)}\0".encode(errors="surrogateescape"))
                content.update(len(payload).to_bytes(8, "little") + payload)
                size += len(payload)
                out[j] = _decode(ref, payload, self._size).transpose(2, 0, 1)
            self._images = images
            self._fingerprint = {"names": names.hexdigest(), "bytes": size, "content": content.hexdigest()}
        return self._images, self._labels

    def fingerprint(self) -> dict:
        """What the split's images were when read, for a training state to tell whether they changed since:
        ``names`` (a hash of each image's label and file name), ``bytes`` read and a hash of their ``content``.

        Taken from the bytes as ``tensors`` reads them (images given as tensors: the tensors, without names),
        once, so a training's fingerprint costs a hash of its data and no second read of it.
        """
        if self._fingerprint is None:
            images, labels = self.tensors()
            if self._fingerprint is None:  # images given as tensors (CIFAR's arrays)
                content = hashlib.blake2b(images.numpy().data, digest_size=16)
                content.update(labels.contiguous().numpy().data)
                self._fingerprint = {"names": None, "bytes": images.nbytes, "content": content.hexdigest()}
        return self._fingerprint


@dataclass(frozen=True)
class ImageData:
    info: DatasetInfo
    train: ImageSplit
    test: ImageSplit


# --------------------------------------------------------------------------------------- helpers


def _split(tree: Mapping[str, Sequence[_ImageRef]], classes: Sequence[str], image_size: int) -> ImageSplit:
    """Builds a split from ``{class: images}``, labelling each image by its class's index."""
    index = {c: i for i, c in enumerate(classes)}
    refs = [ref for c in tree for ref in tree[c]]
    labels = [index[c] for c in tree for _ in tree[c]]
    return ImageSplit(refs, labels, image_size)


# --------------------------------------------------------------------------------------- loaders


def _load_sample(spec: str, root: Path, roots: Roots) -> ImageData:
    """The bundled CIFAR-10 subset, read straight from its zip (it ships with the code, so ``root``
    does not apply)."""
    members: dict[str, dict[str, list[_ImageRef]]] = {"train": {}, "test": {}}
    try:
        with zipfile.ZipFile(SAMPLE_ARCHIVE) as archive:
            for name in sorted(archive.namelist()):
                parts = name.split("/")
                if len(parts) == 3 and parts[0] in members and _is_image(parts[2]):
                    ref = _ImageRef(f"{SAMPLE_ARCHIVE}:{name}", archive.read(name))
                    members[parts[0]].setdefault(parts[1], []).append(ref)
    except (OSError, zipfile.BadZipFile) as e:
        raise DatasetError(f"cannot read the bundled sample {SAMPLE_ARCHIVE}: {e}") from e
    if not members["train"]:
        raise DatasetError(f"no train/<class>/ images in {SAMPLE_ARCHIVE}")
    _check_same_classes(members["train"], members["test"], str(SAMPLE_ARCHIVE))
    classes = tuple(sorted(members["train"]))
    mean, std = CIFAR10_STATS
    info = DatasetInfo(spec, "cifar10", classes, 32, mean, std, _padding(32))
    return ImageData(info, _split(members["train"], classes, 32), _split(members["test"], classes, 32))


def _load_cifar(spec: str, root: Path, roots: Roots, *, hundred: bool) -> ImageData:
    """CIFAR-10/100 through torchvision, from the data root; downloads only when the host answers."""
    # Imported here: torchvision takes seconds to import and only these two datasets need it.
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import check_integrity

    dataset_cls = CIFAR100 if hundred else CIFAR10
    folder, archive = root / dataset_cls.base_folder, root / dataset_cls.filename
    _confined(root, roots)  # torchvision reads (and unpickles) these files: each must be inside the roots
    for path in [folder, archive, *(folder.iterdir() if folder.is_dir() else ())]:
        if path.exists() or path.is_symlink():
            _confined(path, roots)
    if not folder.is_dir():
        if archive.is_file():
            if not check_integrity(str(archive), dataset_cls.tgz_md5):
                raise DatasetError(f"{archive} is incomplete or corrupt (md5 mismatch): delete it or replace it")
        elif not _reachable(dataset_cls.url):
            raise DatasetError(
                f"{spec} is not in {root} and {urlparse(dataset_cls.url).hostname} cannot be reached: "
                f"put {dataset_cls.filename} (from {dataset_cls.url}) in {root}, "
                f"or pick another dataset (e.g. 'sample')"
            )
    try:
        # download=True extracts a present archive without the network (torchvision skips the
        # download when the archive's md5 matches); with the folder already there it is not needed.
        download = not folder.is_dir()
        train = dataset_cls(str(root), train=True, download=download)
        test = dataset_cls(str(root), train=False, download=download)
    except (OSError, RuntimeError) as e:
        raise DatasetError(f"cannot load {spec} from {root}: {e}") from e

    def as_split(ds: CIFAR10) -> ImageSplit:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # torchvision keeps [N, H, W, C]
        return ImageSplit.from_tensors(images, torch.as_tensor(ds.targets))

    mean, std = CIFAR100_STATS if hundred else CIFAR10_STATS
    info = DatasetInfo(spec, "cifar100" if hundred else "cifar10", tuple(train.classes), 32, mean, std, _padding(32))
    return ImageData(info, as_split(train), as_split(test))


def _load_tinyimagenet(spec: str, root: Path, roots: Roots) -> ImageData:
    """TinyImageNet-200 as distributed (``engine.data.catalogue.read_tinyimagenet``), decoded lazily."""
    info, train, test = read_tinyimagenet(spec, root, roots)
    return ImageData(info, _split(train, info.classes, 64), _split(test, info.classes, 64))


def _load_folder(spec: str, root: Path, roots: Roots) -> ImageData:
    """``folder:<path>``: an ImageFolder tree (``engine.data.catalogue.read_folder``), decoded lazily."""
    info, train, test = read_folder(spec, root, roots)
    return ImageData(info, _split(train, info.classes, info.image_size), _split(test, info.classes, info.image_size))


# Each registered dataset's loader: (the full spec, the data root, the roots reads stay in) -> images.
_LOADERS: dict[str, Callable[[str, Path, Roots], ImageData]] = {
    "sample": _load_sample,
    "cifar10": partial(_load_cifar, hundred=False),
    "cifar100": partial(_load_cifar, hundred=True),
    "tinyimagenet": _load_tinyimagenet,
    "folder": _load_folder,
}


def load_dataset(spec: str, root: Path | None = None, *, named_path: bool = False) -> ImageData:
    """Loads a dataset by spec, reading only inside the data roots.

    Args:
        spec: A registered name (``list_datasets``), or ``folder:<path>`` for an ImageFolder tree;
            a relative path resolves against ``root``.
        root: Data root holding downloadable datasets; defaults to ``default_data_root()``. One given
            here is allowed like the data roots.
        named_path: The ``folder:`` path was named by the person running this (the command line's own
            arguments): it is read even outside the data roots. Nothing under it may lead out of it.

    Every folder and file is resolved (symlinks followed) and must lie inside ``data_roots()`` (plus
    ``root`` and a named path) when it is listed or read; a stored spec (a job, a model file) never
    widens them.

    Raises:
        DatasetError: Unknown spec, a dataset that is missing or malformed (the message names the
            file or folder and, where one exists, the fix), a path leading outside the roots, or a split
            with fewer than two classes.
    """
    entry, name, _ = _parse_spec(spec)
    roots, root = read_roots(spec, entry, root, named_path)
    try:
        data = _LOADERS[name](spec, root, roots)
    except OSError as e:  # a folder that vanished or cannot be listed, a name the system refuses
        raise DatasetError(f"cannot read dataset {spec}: {e.strerror or e}") from None
    for split in ("train", "test"):
        check_classes(spec, split, int(getattr(data, split)._labels.unique().numel()))
    return data


# --------------------------------------------------------------------------------------- transforms


def augment(x: torch.Tensor, info: DatasetInfo, generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched RandomCrop(image_size, padding=info.crop_padding) + RandomHorizontalFlip(0.5).

    Each sample gets its own crop offset and flip, drawn in one call per kind so the whole batch is
    two gathers on ``x``'s device, with no Python loop over samples. Zero padding as in torchvision.

    Args:
        x: Float images in [0, 1], ``[B, 3, S, S]`` with ``S == info.image_size``, on any device.
        info: Supplies the crop padding.
        generator: Makes the draws reproducible; must live on ``x``'s device type. ``None`` uses the
            global RNG of that device.

    Returns:
        The augmented batch, same shape, dtype and device as ``x``.
    """
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2:] != (info.image_size, info.image_size):
        raise ValueError(f"expected [B, 3, {info.image_size}, {info.image_size}], got {list(x.shape)}")
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"generator lives on {generator.device.type}, images on {x.device.type}")
    b, c, size, _ = x.shape
    pad = info.crop_padding
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=x.device)
    flip = torch.rand(b, generator=generator, device=x.device) < 0.5

    steps = torch.arange(size, device=x.device)
    rows = offsets[0, :, None] + steps  # [B, S] rows of the padded image to keep
    cols = offsets[1, :, None] + steps
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip reads the crop's columns backwards

    padded = F.pad(x, (pad, pad, pad, pad))
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, size, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(b, c, size, size))


def normalize(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` for float images in [0, 1], ``[..., 3, H, W]``, any device."""
    if not x.is_floating_point():
        raise ValueError(f"normalize expects float images in [0, 1], got {x.dtype} (convert with x.float() / 255)")
    mean = torch.tensor(info.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(info.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std
