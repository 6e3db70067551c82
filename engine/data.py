"""Image datasets for the search: loading, batched augmentation and normalisation.

Every dataset comes back as an ``ImageData``: two ``ImageSplit`` s of raw uint8 images plus a
``DatasetInfo`` carrying what training needs to treat them correctly (normalisation statistics, crop
padding and which SNASNet macro-network fits). Augmentation and normalisation are deliberately not part
of the splits: they run batched on the training device (``augment``, ``normalize``), so a whole epoch
can live on the GPU as one uint8 tensor instead of going through per-sample PIL transforms.

Datasets are named by a spec string (see ``list_datasets``): ``sample`` (the offline CIFAR-10 subset
bundled with the project), ``cifar10``, ``cifar100``, ``tinyimagenet`` and ``folder:<path>``.
"""

from __future__ import annotations

import io
import os
import socket
import stat
import threading
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

DATA_ROOT_ENV = "SPIKERNEL_DATA"
DATA_ROOTS_ENV = "SPIKERNEL_DATA_ROOTS"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_ARCHIVE = PROJECT_ROOT / "data" / "sample" / "cifar10-sample.zip"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]  # (mean, std) per RGB channel
CIFAR10_STATS: Stats = ((0.4913, 0.4821, 0.4465), (0.2470, 0.2434, 0.2615))
CIFAR100_STATS: Stats = ((0.5071, 0.4867, 0.4408), (0.2673, 0.2564, 0.2762))
IMAGENET_STATS: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# A connect that takes longer than this counts as offline: better to fail at once with instructions
# than to hang in a download that cannot finish.
REACHABILITY_TIMEOUT_S = 3.0


class DatasetError(ValueError):
    """A dataset that cannot be loaded as asked; the message names the file or folder at fault."""


def default_data_root() -> Path:
    """Where downloadable datasets live: ``$SPIKERNEL_DATA`` if set, else ``<project root>/data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else PROJECT_ROOT / "data"


@dataclass(frozen=True)
class DatasetInfo:
    """What training needs to know about a dataset besides its images.

    Attributes:
        name: The spec the dataset was loaded from, e.g. ``"sample"`` or ``"folder:pets"``.
        macro: The SNASNet macro-network column that fits: ``"cifar10"``, ``"cifar100"`` or
            ``"tinyimagenet"`` (the reference sizes the network by dataset, not by class count alone).
        classes: Class names; a label is an index into this tuple.
        image_size: Side of the square images in pixels.
        mean: Per-channel mean used by ``normalize``.
        std: Per-channel standard deviation used by ``normalize``.
        crop_padding: Zero padding of the random crop in ``augment`` (4 at 32 px, 8 at 64 px).
    """

    name: str
    macro: str
    classes: tuple[str, ...]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_padding: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# --------------------------------------------------------------------------------------- splits


Roots = tuple[Path, ...]  # resolved folders every file read must lie in


def _inside(real: Path, roots: Roots) -> bool:
    return any(real == r or real.is_relative_to(r) for r in roots)


def _outside(path: Path | str, real: Path) -> DatasetError:
    return DatasetError(
        f"{path} leads outside the allowed data roots (to {real}); put the data under the data root or add its "
        f"parent to ${DATA_ROOTS_ENV}"
    )


def _confined(path: Path | str, roots: Roots) -> Path:
    """``path`` with every symlink resolved, if that lies inside ``roots``; else ``DatasetError``."""
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot resolve {path}: {e}") from None
    if not _inside(real, roots):
        raise _outside(path, real)
    return real


def _read_confined(path: str, roots: Roots) -> bytes:
    """The bytes of a regular file inside ``roots``, checked on the opened file itself (so a file or folder
    swapped for a symlink after it was listed is still caught), never blocking on a pipe or device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise DatasetError(f"cannot read image {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        try:
            real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # no /proc: the path as resolved now
            real = Path(os.path.realpath(path))
        if not _inside(real, roots):
            raise _outside(path, real)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DatasetError(f"{path} is not a regular file")
        return f.read()


@dataclass(frozen=True)
class _ImageRef:
    """One encoded image, not yet decoded.

    Attributes:
        origin: Where the image came from, for error messages: a file path, or ``<archive>:<member>``.
        payload: The encoded bytes when they were read from an archive; ``None`` means read ``origin``
            from disk at decode time (so a large folder costs no memory until it is used).
        roots: The folders a file read from disk must lie in, checked when it is read.
    """

    origin: str
    payload: bytes | None = None
    roots: Roots = ()


def _decode(ref: _ImageRef, size: int) -> np.ndarray:
    """Decodes one image to a ``[size, size, 3]`` uint8 RGB array.

    Images of another size are scaled so their shorter side is ``size`` and center-cropped, so one
    odd image in a folder does not break stacking.
    """
    payload = ref.payload if ref.payload is not None else _read_confined(ref.origin, ref.roots)
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
        pixels = np.array(_decode(self._refs[i], self._size))  # a writable copy for torch
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
            for j, ref in enumerate(self._refs):
                out[j] = _decode(ref, self._size).transpose(2, 0, 1)
            self._images = images
        return self._images, self._labels


@dataclass(frozen=True)
class ImageData:
    info: DatasetInfo
    train: ImageSplit
    test: ImageSplit


# --------------------------------------------------------------------------------------- helpers


def _is_image(name: str) -> bool:
    """Whether a file name has an image extension; hidden files (``._x.jpg`` from macOS) are not images."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _images_under(folder: Path, roots: Roots) -> list[str]:
    """Paths of the image files anywhere below ``folder``, sorted so that item order is stable.

    ``os.walk`` rather than ``Path.rglob``: it needs no ``stat`` per file, which makes listing a
    50,000-image tree about seven times faster. It does not follow symlinked folders; a symlinked
    ``folder`` itself must lead inside ``roots``, and each file is checked when it is read.
    """
    found = []
    for parent, subdirs, files in os.walk(_confined(folder, roots)):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found += [os.path.join(parent, f) for f in files if _is_image(f)]
    return sorted(found)


def _class_dirs(split_dir: Path, roots: Roots) -> dict[str, Path]:
    dirs = {d.name: d for d in _confined(split_dir, roots).iterdir() if d.is_dir() and not d.name.startswith(".")}
    if not dirs:
        raise DatasetError(f"no class folders in {split_dir}")
    return dict(sorted(dirs.items()))


def _check_same_classes(train: Mapping[str, object], test: Mapping[str, object], where: str) -> None:
    missing, extra = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    if missing or extra:
        raise DatasetError(
            f"train and test classes differ in {where}: missing from test: {missing or 'none'}; "
            f"only in test: {extra or 'none'}"
        )


def _split(tree: Mapping[str, Sequence[_ImageRef]], classes: Sequence[str], image_size: int) -> ImageSplit:
    """Builds a split from ``{class: images}``, labelling each image by its class's index."""
    index = {c: i for i, c in enumerate(classes)}
    refs = [ref for c in tree for ref in tree[c]]
    labels = [index[c] for c in tree for _ in tree[c]]
    return ImageSplit(refs, labels, image_size)


def _padding(image_size: int) -> int:
    """RandomCrop padding scales with the image: 4 px at 32 (CIFAR), 8 px at 64 (TinyImageNet)."""
    return image_size // 8


def _reachable(url: str, timeout: float = REACHABILITY_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the host of ``url`` opens within ``timeout`` seconds.

    The probe runs in a daemon thread because DNS resolution ignores socket timeouts and can stall
    far longer than ``timeout`` on a machine without a network.
    """
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    opened = threading.Event()

    def probe() -> None:
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                opened.set()
        except OSError:
            pass

    threading.Thread(target=probe, daemon=True).start()
    return opened.wait(timeout)


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
    """TinyImageNet-200 as distributed: ``train/<wnid>/images/`` and ``val/images/`` labelled by
    ``val/val_annotations.txt``. The official val split serves as the test split (its test split has
    no labels)."""
    base = root / "tiny-imagenet-200"
    if not base.is_dir():
        raise DatasetError(
            f"TinyImageNet not found: unzip tiny-imagenet-200.zip so that {base} exists, "
            f"or pick another dataset (e.g. 'sample')"
        )
    for needed in (base / "train", base / "val" / "images"):
        if not needed.is_dir():
            raise DatasetError(f"TinyImageNet folder {needed} is missing")
    annotations = base / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DatasetError(f"TinyImageNet file {annotations} is missing")

    train: dict[str, list[_ImageRef]] = {}
    for wnid, class_dir in _class_dirs(base / "train", roots).items():
        files = _images_under(class_dir / "images", roots)
        if not files:
            raise DatasetError(f"no images in {class_dir / 'images'}")
        train[wnid] = [_ImageRef(f, roots=roots) for f in files]

    test: dict[str, list[_ImageRef]] = {wnid: [] for wnid in train}
    for line_no, line in enumerate(_read_confined(str(annotations), roots).decode(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DatasetError(f"{annotations}:{line_no}: expected '<file>\\t<wnid>\\t...', got {line!r}")
        file_name, wnid = fields[0], fields[1]
        if wnid not in test:
            raise DatasetError(f"{annotations}:{line_no}: wnid {wnid!r} has no folder in {base / 'train'}")
        image = base / "val" / "images" / file_name
        if not image.is_file():
            raise DatasetError(f"{annotations}:{line_no}: image {image} does not exist")
        test[wnid].append(_ImageRef(str(image), roots=roots))
    if not any(test.values()):
        raise DatasetError(f"{annotations} lists no images")

    classes = tuple(train)
    mean, std = IMAGENET_STATS
    info = DatasetInfo(spec, "tinyimagenet", classes, 64, mean, std, _padding(64))
    return ImageData(info, _split(train, classes, 64), _split(test, classes, 64))


def _load_folder(spec: str, root: Path, roots: Roots) -> ImageData:
    """``folder:<path>``: any ImageFolder tree with ``train/`` and ``test/`` (or ``val/``) of
    ``<class>/<images>``.

    The first training image fixes the size (its shorter side); the statistics and macro-network are
    those of the benchmark the images most resemble in size and class count.
    """
    base = _folder_path(spec, root)
    if not base.is_dir():
        raise DatasetError(f"dataset folder {base} does not exist")
    train_dir = base / "train"
    if not train_dir.is_dir():
        raise DatasetError(f"dataset folder {base} has no train/ folder")
    test_dir = next((base / d for d in ("test", "val") if (base / d).is_dir()), None)
    if test_dir is None:
        raise DatasetError(f"dataset folder {base} has neither a test/ nor a val/ folder")

    trees = []
    for split_dir in (train_dir, test_dir):
        tree = {}
        for name, class_dir in _class_dirs(split_dir, roots).items():
            files = _images_under(class_dir, roots)
            if not files:
                raise DatasetError(f"class folder {class_dir} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            tree[name] = [_ImageRef(f, roots=roots) for f in files]
        trees.append(tree)
    train, test = trees
    _check_same_classes(train, test, str(base))

    first = next(iter(train.values()))[0].origin
    try:
        with Image.open(io.BytesIO(_read_confined(first, roots))) as img:
            image_size = min(img.size)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read image {first}: {e}") from e

    classes = tuple(train)
    large = image_size >= 64
    mean, std = IMAGENET_STATS if large else CIFAR10_STATS
    macro = "tinyimagenet" if large else "cifar10" if len(classes) <= 10 else "cifar100"
    info = DatasetInfo(spec, macro, classes, image_size, mean, std, _padding(image_size))
    return ImageData(info, _split(train, classes, image_size), _split(test, classes, image_size))


@dataclass(frozen=True)
class _Entry:
    """A registered dataset: its loader, whether its spec carries a path (``name:<path>``), and its
    shape when that is fixed (so networks can be sized without the data on disk)."""

    load: Callable[[str, Path, Roots], ImageData]  # (the full spec, the data root, the roots reads stay in)
    takes_path: bool = False
    shape: DatasetShape | None = None


@dataclass(frozen=True)
class DatasetShape:
    """What sizing a network needs of a dataset: no images, no class names."""

    name: str
    macro: str
    image_size: int
    num_classes: int


_REGISTRY: dict[str, _Entry] = {
    "sample": _Entry(_load_sample, shape=DatasetShape("sample", "cifar10", 32, 10)),
    "cifar10": _Entry(partial(_load_cifar, hundred=False), shape=DatasetShape("cifar10", "cifar10", 32, 10)),
    "cifar100": _Entry(partial(_load_cifar, hundred=True), shape=DatasetShape("cifar100", "cifar100", 32, 100)),
    "tinyimagenet": _Entry(_load_tinyimagenet, shape=DatasetShape("tinyimagenet", "tinyimagenet", 64, 200)),
    "folder": _Entry(_load_folder, takes_path=True),
}


def list_datasets() -> list[str]:
    """The registered dataset names; ``folder`` is used as ``folder:<path>``."""
    return list(_REGISTRY)


MAX_SPEC = 4096  # characters of a dataset spec; each folder name at most NAME_MAX bytes
NAME_MAX = 255


def _parse_spec(spec: str) -> tuple[_Entry, str, str]:
    """``(entry, name, path)`` of a spec, or ``DatasetError`` saying what is wrong with it: one reading of
    a spec for validation, loading and sizing alike, so what passes a check loads in the worker."""
    valid = ", ".join(f"{n}:<path>" if e.takes_path else n for n, e in _REGISTRY.items())
    if not isinstance(spec, str):
        raise DatasetError(f"a dataset is named by text, got {type(spec).__name__}; valid: {valid}")
    if spec != spec.strip():
        raise DatasetError(f"dataset {spec!r} has spaces around it; valid: {valid}")
    if any(ord(c) < 32 or ord(c) == 127 for c in spec):
        raise DatasetError(f"dataset {spec[:60]!r} contains a control character")
    if len(spec) > MAX_SPEC:
        raise DatasetError(f"a dataset spec of {len(spec):,} characters is too long (at most {MAX_SPEC:,})")
    name, has_arg, arg = spec.partition(":")
    entry = _REGISTRY.get(name)
    if entry is None:
        raise DatasetError(f"unknown dataset {spec[:80]!r}; valid: {valid}")
    if entry.takes_path and not arg:
        raise DatasetError(f"dataset {name!r} needs a path: {name}:<path>")
    if has_arg and not entry.takes_path:
        raise DatasetError(f"dataset {name!r} takes no argument, got {spec!r}; valid: {valid}")
    if any(len(part.encode()) > NAME_MAX for part in arg.split("/")):
        raise DatasetError(f"a folder name in {spec[:80]!r}... is longer than {NAME_MAX} bytes")
    return entry, name, arg


def _folder_path(spec: str, root: Path) -> Path:
    path = Path(spec.partition(":")[2]).expanduser()
    return path if path.is_absolute() else root / path


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
    entry, name, arg = _parse_spec(spec)
    roots = list(data_roots())
    if root is not None:
        roots.append(Path(root).resolve())
    root = Path(root) if root is not None else default_data_root()
    if named_path and entry.takes_path:
        roots.append(Path(os.path.realpath(_folder_path(spec, root))))
    try:
        data = entry.load(spec, root, tuple(roots))
    except OSError as e:  # a folder that vanished or cannot be listed, a name the system refuses
        raise DatasetError(f"cannot read dataset {spec}: {e.strerror or e}") from None
    for split in ("train", "test"):
        classes = int(getattr(data, split)._labels.unique().numel())
        if classes < 2:
            raise DatasetError(
                f"the {split} split of {spec} has {classes} class{'' if classes == 1 else 'es'} with images; "
                "at least two are needed (with one, every prediction is right and nothing is learnt)"
            )
    return data


def data_roots() -> list[Path]:
    """The folders datasets may come from: the data root plus any in ``$SPIKERNEL_DATA_ROOTS``
    (separated by ``os.pathsep``). Folder datasets outside them are refused."""
    extra = [Path(p).expanduser() for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p]
    return [p.resolve() for p in [default_data_root(), *extra]]


def outside_roots(spec: str, root: Path | None = None) -> Path | None:
    """The folder of a ``folder:`` spec when it lies outside the data roots (None otherwise): what
    ``load_dataset(..., named_path=True)`` reads only because it was named."""
    entry, _, _ = _parse_spec(spec)
    if not entry.takes_path:
        return None
    real = Path(os.path.realpath(_folder_path(spec, Path(root) if root else default_data_root())))
    return None if _inside(real, tuple(data_roots())) else real


def check_dataset(spec: str, root: Path | None = None) -> str:
    """Whether a dataset can be used, without decoding it: raises ``DatasetError`` with the reason (and
    the fix) when not, else says how it will be read ("bundled", "on disk", "will download").

    ``folder:<path>`` must resolve (symlinks followed) inside one of ``data_roots()`` and have at least
    two class folders in each split.
    """
    _, name, arg = _parse_spec(spec)
    root = Path(root) if root is not None else default_data_root()
    try:
        return _check(name, arg, root)
    except OSError as e:
        raise DatasetError(f"cannot read dataset {spec}: {e.strerror or e}") from None


def _check(name: str, arg: str, root: Path) -> str:
    if name == "sample":
        if not SAMPLE_ARCHIVE.is_file():
            raise DatasetError(f"the bundled sample {SAMPLE_ARCHIVE.name} is missing; run scripts/build_sample.py")
        return "bundled"
    if name in ("cifar10", "cifar100"):
        from torchvision.datasets import CIFAR10, CIFAR100

        cls = CIFAR100 if name == "cifar100" else CIFAR10
        if (root / cls.base_folder).is_dir() or (root / cls.filename).is_file():
            return "on disk"
        if _reachable(cls.url):
            return "will download"
        raise DatasetError(
            f"{name} is not in the data root and {urlparse(cls.url).hostname} cannot be reached: "
            f"put {cls.filename} in the data root"
        )
    if name == "tinyimagenet":
        if not (root / "tiny-imagenet-200").is_dir():
            raise DatasetError("TinyImageNet not found: unzip tiny-imagenet-200.zip into the data root")
        return "on disk"
    resolved = Path(os.path.realpath(_folder_path(f"{name}:{arg}", root)))
    allowed = data_roots()
    if not any(resolved.is_relative_to(r) for r in allowed):
        raise DatasetError(
            f"folder {arg!r} is outside the allowed data roots; put it under the data root or add its "
            f"parent to ${DATA_ROOTS_ENV}"
        )
    if not (resolved / "train").is_dir():
        raise DatasetError(f"folder {arg!r} has no train/ folder of <class>/<images>")
    test = next((resolved / d for d in ("test", "val") if (resolved / d).is_dir()), None)
    if test is None:
        raise DatasetError(f"folder {arg!r} has no test/ (or val/) folder")
    for split in (resolved / "train", test):
        classes = [d for d in split.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if len(classes) < 2:
            raise DatasetError(f"{split.name}/ of folder {arg!r} has {len(classes)} class folder(s); at least two "
                               "are needed")  # fmt: skip
    return "on disk"


def dataset_shape(spec: str, root: Path | None = None) -> DatasetShape | DatasetInfo:
    """The shape of a dataset, known without its files for the built-in ones (a folder is opened)."""
    entry, _, _ = _parse_spec(spec)
    if entry.shape is not None:
        return entry.shape
    return load_dataset(spec, root).info


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
