"""Datasets as names and folders, without torch: the registry, the data roots, checks and shapes.

Everything here is plain values, files and (for a folder's image size) Pillow, so the dashboard, the store
and the command line's checks use it without importing torch. ``engine.data.images`` builds on it: it decodes the
images into tensors (``load_dataset``) and augments them on the training device.

Datasets are named by a spec string (see ``list_datasets``): ``sample`` (the offline CIFAR-10 subset
bundled with the project), ``cifar10``, ``cifar100``, ``tinyimagenet`` and ``folder:<path>``.
"""

from __future__ import annotations

import io
import os
import socket
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

from PIL import Image

from engine.core.errors import InputError
from engine.core.paths import DATA_ROOTS_ENV, PROJECT_ROOT, default_data_root

SAMPLE_ARCHIVE = PROJECT_ROOT / "data" / "sample" / "cifar10-sample.zip"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]  # (mean, std) per RGB channel
CIFAR10_STATS: Stats = ((0.4913, 0.4821, 0.4465), (0.2470, 0.2434, 0.2615))
CIFAR100_STATS: Stats = ((0.5071, 0.4867, 0.4408), (0.2673, 0.2564, 0.2762))
IMAGENET_STATS: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# A connect that takes longer than this counts as offline: better to fail at once with instructions
# than to hang in a download that cannot finish.
REACHABILITY_TIMEOUT_S = 3.0


class DatasetError(InputError):
    """A dataset that cannot be loaded as asked; the message names the file or folder at fault."""


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


# --------------------------------------------------------------------------------------- files


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


def _not_regular(path: Path | str) -> DatasetError:
    return DatasetError(f"{path} is not a regular file (a folder, FIFO, device or broken link named like an image)")


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
            raise _not_regular(path)
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


def _is_image(name: str) -> bool:
    """Whether a file name has an image extension; hidden files (``._x.jpg`` from macOS) are not images."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _images_under(folder: Path, roots: Roots) -> list[str]:
    """Paths of the image files anywhere below ``folder``, sorted so that item order is stable; a name
    like an image that leads outside ``roots`` or is not a regular file is refused here, as it would be
    when read, so that listing a dataset (the launch check's and the loader's) gives the loader's verdict.

    ``os.scandir`` rather than ``Path.rglob``: the file types come with the listing, so only a symlink
    costs a ``stat`` (a plain entry of a confined folder is inside it), which makes listing a
    50,000-image tree about seven times faster. Nothing is opened: opening a FIFO blocks. Symlinked
    folders below ``folder`` are not followed; a symlinked ``folder`` itself must lead inside ``roots``,
    and each file is checked again when it is read (it may be swapped after listing).
    """
    found, pending = [], [_confined(folder, roots)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif _is_image(entry.name):
                    if entry.is_symlink():
                        _confined(entry.path, roots)
                    if not entry.is_file():
                        raise _not_regular(entry.path)
                    found.append(entry.path)
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


@dataclass(frozen=True)
class CifarFiles:
    """Where torchvision keeps a CIFAR dataset in the data root (its ``base_folder``, ``filename`` and ``url``;
    a test holds them equal), known here without importing torchvision and so torch."""

    folder: str
    archive: str
    url: str


CIFAR_FILES = {
    "cifar10": CifarFiles(
        "cifar-10-batches-py", "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    ),
    "cifar100": CifarFiles(
        "cifar-100-python", "cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    ),
}


# --------------------------------------------------------------------------------------- folders

ImageTree = dict[str, list[_ImageRef]]  # class name -> its images, in a stable order


def read_folder(spec: str, root: Path, roots: Roots) -> tuple[DatasetInfo, ImageTree, ImageTree]:
    """``folder:<path>``: any ImageFolder tree with ``train/`` and ``test/`` (or ``val/``) of
    ``<class>/<images>``, listed (not decoded): its info and the train and test images of each class.

    The one verdict on a folder dataset: the loader, the launch check (``check_dataset``) and sizing call
    it, so what the dashboard and ``submit`` accept, the worker reads; only decoding errors beyond the
    first image are left to the loader (decoding every image would make a check of a big folder slow).

    The first training image fixes the size (its shorter side); the statistics and macro-network are
    those of the benchmark the images most resemble in size and class count.
    """
    base = _folder_path(spec, root)
    _confined(base, roots)
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
                raise DatasetError(
                    f"class folder {class_dir} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
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
    check_classes(spec, "train", len(classes))  # every class folder holds images, the same in both splits
    large = image_size >= 64
    mean, std = IMAGENET_STATS if large else CIFAR10_STATS
    macro = "tinyimagenet" if large else "cifar10" if len(classes) <= 10 else "cifar100"
    return DatasetInfo(spec, macro, classes, image_size, mean, std, _padding(image_size)), train, test


def read_tinyimagenet(spec: str, root: Path, roots: Roots) -> tuple[DatasetInfo, ImageTree, ImageTree]:
    """TinyImageNet-200 as distributed, listed (not decoded): ``train/<wnid>/images/`` and ``val/images/``
    labelled by ``val/val_annotations.txt``. The official val split serves as the test split (its test split
    has no labels). Like ``read_folder``, the one verdict: the loader and the launch check call it."""
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
        real = _confined(image, roots)  # a name such as ../../x, or a link, must not lead out of the data roots
        if not real.exists():
            raise DatasetError(f"{annotations}:{line_no}: image {image} does not exist")
        if not real.is_file():
            raise _not_regular(image)
        test[wnid].append(_ImageRef(str(image), roots=roots))
    if not any(test.values()):
        raise DatasetError(f"{annotations} lists no images")

    mean, std = IMAGENET_STATS
    return DatasetInfo(spec, "tinyimagenet", tuple(train), 64, mean, std, _padding(64)), train, test


def check_classes(spec: str, split: str, classes: int) -> None:
    """A split must have images of at least two classes (with one, every prediction is right)."""
    if classes < 2:
        raise DatasetError(
            f"the {split} split of {spec} has {classes} class{'' if classes == 1 else 'es'} with images; "
            "at least two are needed (with one, every prediction is right and nothing is learnt)"
        )


# --------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetShape:
    """What sizing a network needs of a dataset: no images, no class names."""

    name: str
    macro: str
    image_size: int
    num_classes: int


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: whether its spec carries a path (``name:<path>``), and its shape when that is
    fixed (so networks can be sized without the data on disk). Its loader is ``engine.data.images``'s."""

    takes_path: bool = False
    shape: DatasetShape | None = None


_REGISTRY: dict[str, DatasetEntry] = {
    "sample": DatasetEntry(shape=DatasetShape("sample", "cifar10", 32, 10)),
    "cifar10": DatasetEntry(shape=DatasetShape("cifar10", "cifar10", 32, 10)),
    "cifar100": DatasetEntry(shape=DatasetShape("cifar100", "cifar100", 32, 100)),
    "tinyimagenet": DatasetEntry(shape=DatasetShape("tinyimagenet", "tinyimagenet", 64, 200)),
    "folder": DatasetEntry(takes_path=True),
}


def list_datasets() -> list[str]:
    """The registered dataset names; ``folder`` is used as ``folder:<path>``."""
    return list(_REGISTRY)


MAX_SPEC = 4096  # characters of a dataset spec; each folder name at most NAME_MAX bytes
NAME_MAX = 255


def _parse_spec(spec: str) -> tuple[DatasetEntry, str, str]:
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


def read_roots(spec: str, entry: DatasetEntry, root: Path | None, named_path: bool = False) -> tuple[Roots, Path]:
    """The folders reading ``spec`` may touch (``data_roots()``, plus ``root`` when given and a named
    ``folder:`` path), and the data root it reads from. See ``engine.data.images.load_dataset``."""
    roots = list(data_roots())
    if root is not None:
        roots.append(Path(root).resolve())
    root = Path(root) if root is not None else default_data_root()
    if named_path and entry.takes_path:
        roots.append(Path(os.path.realpath(_folder_path(spec, root))))
    return tuple(roots), root


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


class Verdict(NamedTuple):
    """Whether a dataset can be used: how it will be read ("bundled", "on disk", "will download"), and how
    many images a folder's training split holds (None for a built-in dataset, larger than any score batch)."""

    state: str
    training_images: int | None = None


def check_dataset(spec: str, root: Path | None = None) -> Verdict:
    """Whether a dataset can be used, without decoding it: raises ``DatasetError`` with the reason (and
    the fix) when not.

    ``folder:<path>`` and ``tinyimagenet`` get the loader's own verdict (``read_folder``, ``read_tinyimagenet``:
    confinement to ``data_roots()``, file types and classes, listed once), so a dataset accepted here is not
    refused by the worker.
    """
    entry, name, _ = _parse_spec(spec)
    roots, root = read_roots(spec, entry, root)
    try:
        if entry.takes_path or name == "tinyimagenet":
            listing = read_folder if entry.takes_path else read_tinyimagenet
            _, train, _ = listing(spec, root, roots)
            return Verdict("on disk", sum(map(len, train.values())))
        return Verdict(_check(name, root))
    except OSError as e:
        raise DatasetError(f"cannot read dataset {spec}: {e.strerror or e}") from None


def _check(name: str, root: Path) -> str:
    if name == "sample":
        if not SAMPLE_ARCHIVE.is_file():
            raise DatasetError(f"the bundled sample {SAMPLE_ARCHIVE.name} is missing; run scripts/build_sample.py")
        return "bundled"
    files = CIFAR_FILES[name]
    if (root / files.folder).is_dir() or (root / files.archive).is_file():
        return "on disk"
    if _reachable(files.url):
        return "will download"
    raise DatasetError(
        f"{name} is not in the data root and {urlparse(files.url).hostname} cannot be reached: "
        f"put {files.archive} in the data root"
    )


def dataset_shape(spec: str, root: Path | None = None) -> DatasetShape | DatasetInfo:
    """The shape of a dataset, known without its files for the built-in ones (a folder is listed and its
    first image opened; nothing is decoded)."""
    entry, _, _ = _parse_spec(spec)
    if entry.shape is not None:
        return entry.shape
    roots, root = read_roots(spec, entry, root)
    try:
        return read_folder(spec, root, roots)[0]
    except OSError as e:  # as load_dataset says it
        raise DatasetError(f"cannot read dataset {spec}: {e.strerror or e}") from None
