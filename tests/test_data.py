"""Tests for engine.data.images: the bundled sample, folder and TinyImageNet layouts, errors, transforms.

Every tree is built in ``tmp_path`` from real images of the bundled sample archive, so the tests run
offline and never depend on where the project is checked out. The ``sample`` fixture (the loaded
bundled sample) comes from conftest.py.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.core import paths
from engine.data import catalogue, images
from engine.data.images import DatasetError, DatasetInfo, ImageSplit, augment, load_dataset, normalize

SAMPLE_ZIP = Path(__file__).resolve().parent.parent / "data" / "sample" / "cifar10-sample.zip"


@pytest.fixture(autouse=True)
def temporary_folders_are_a_data_root(tmp_path_factory, monkeypatch) -> None:
    """The trees built here live in pytest's temporary folder: allowed like a data root."""
    monkeypatch.setenv(paths.DATA_ROOTS_ENV, str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    """Twelve real 32x32 RGB images from the sample archive, one per line of its sorted listing."""
    with zipfile.ZipFile(SAMPLE_ZIP) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("train/"))[::400][:12]
        return [Image.open(io.BytesIO(archive.read(n))).convert("RGB") for n in names]


def _save(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _tree(base: Path, split: str, classes: dict[str, list[Image.Image]], ext: str = ".png") -> None:
    for name, pictures in classes.items():
        for i, img in enumerate(pictures):
            _save(img, base / split / name / f"{i:03d}{ext}")


def _pixels(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def _cifar_info(image_size: int = 32, padding: int = 4) -> DatasetInfo:
    mean, std = catalogue.CIFAR10_STATS
    return DatasetInfo("test", "cifar10", tuple("abcdefghij"), image_size, mean, std, padding)


# --------------------------------------------------------------------------------------- registry


def test_list_datasets() -> None:
    assert catalogue.list_datasets() == ["sample", "cifar10", "cifar100", "tinyimagenet", "folder"]


def test_default_data_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.DATA_ROOT_ENV, str(tmp_path))
    assert paths.default_data_root() == tmp_path
    monkeypatch.delenv(paths.DATA_ROOT_ENV)
    assert paths.default_data_root() == paths.PROJECT_ROOT / "data"


@pytest.mark.parametrize("spec", ["imagenet", "cifar-10", ""])
def test_unknown_spec_lists_valid_names(spec: str) -> None:
    with pytest.raises(DatasetError, match="sample, cifar10, cifar100, tinyimagenet, folder:<path>"):
        load_dataset(spec)


def test_spec_arguments_are_checked() -> None:
    with pytest.raises(DatasetError, match="needs a path"):
        load_dataset("folder:")
    with pytest.raises(DatasetError, match="takes no argument"):
        load_dataset("sample:extra")


# --------------------------------------------------------------------------------------- sample


def test_sample_loads_balanced_uint8(sample: images.ImageData) -> None:
    info = sample.info
    assert (info.name, info.macro, info.image_size, info.crop_padding) == ("sample", "cifar10", 32, 4)
    assert info.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert info.num_classes == 10
    assert (info.mean, info.std) == catalogue.CIFAR10_STATS
    for split, per_class in ((sample.train, 500), (sample.test, 100)):
        images, labels = split.tensors()
        assert len(split) == 10 * per_class
        assert images.shape == (10 * per_class, 3, 32, 32) and images.dtype == torch.uint8
        assert labels.dtype == torch.int64
        assert labels.bincount().tolist() == [per_class] * 10
        assert split.tensors()[0] is images  # decoded once


def test_sample_items_match_tensors(sample: images.ImageData) -> None:
    images, labels = sample.test.tensors()
    fresh = load_dataset("sample").test  # not yet decoded: items decode one by one
    for i in (0, 345, -1):
        image, label = fresh[i]
        assert torch.equal(image, images[i]) and label == labels[i]
        assert isinstance(label, int)


def test_from_tensors_validates() -> None:
    split = ImageSplit.from_tensors(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]))
    assert len(split) == 2 and split[1][1] == 1
    with pytest.raises(DatasetError, match="uint8"):
        ImageSplit.from_tensors(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))


# --------------------------------------------------------------------------------------- augment


def test_augment_keeps_shape_and_is_reproducible(sample: images.ImageData) -> None:
    x = sample.train.tensors()[0][:64].float() / 255
    a = augment(x, sample.info, torch.Generator().manual_seed(1))
    b = augment(x, sample.info, torch.Generator().manual_seed(1))
    c = augment(x, sample.info, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_augment_is_a_padded_crop_with_flip() -> None:
    """Each output must be exactly one (row shift, column shift, flip) of the zero-padded input."""
    info = _cifar_info(image_size=16, padding=3)  # small, so trying every crop stays fast
    pad, size = info.crop_padding, info.image_size
    x = torch.rand(64, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = augment(x, info, torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))

    found: list[list[tuple[int, int, bool]]] = [[] for _ in range(len(x))]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, :, dy : dy + size, dx : dx + size]
            for flip in (False, True):
                candidate = crop.flip(3) if flip else crop
                for k in torch.nonzero((candidate == out).flatten(1).all(1)).flatten().tolist():
                    found[k].append((dy, dx, flip))
    assert all(len(params) == 1 for params in found)
    params = [p[0] for p in found]
    assert {flip for _, _, flip in params} == {False, True}
    assert len({(dy, dx) for dy, dx, _ in params}) > 15  # offsets vary per sample (49 possible)
    # A crop shifted down from the top of the padding starts with zero rows.
    k, (dy, dx, flip) = next((k, p) for k, p in enumerate(params) if p[0] < pad)
    assert torch.all(out[k, :, : pad - dy] == 0)
    expected = x[k, :, : size - (pad - dy)]
    expected = torch.nn.functional.pad(expected, (pad, pad, 0, 0))[:, :, dx : dx + size]
    assert torch.equal(out[k, :, pad - dy :], expected.flip(2) if flip else expected)


def test_augment_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="expected"):
        augment(torch.rand(2, 3, 16, 16), _cifar_info())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augment_on_cuda() -> None:
    info = _cifar_info()
    x = torch.rand(32, 3, 32, 32, device="cuda")
    a = augment(x, info, torch.Generator("cuda").manual_seed(5))
    assert a.device == x.device and torch.equal(a, augment(x, info, torch.Generator("cuda").manual_seed(5)))
    assert augment(x, info).device == x.device
    with pytest.raises(ValueError, match="generator"):
        augment(x, info, torch.Generator().manual_seed(5))


# --------------------------------------------------------------------------------------- normalize


def test_normalize_matches_hand_computation() -> None:
    info = _cifar_info()
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    y = normalize(x, info)
    for c in range(3):
        assert torch.allclose(y[:, c], (x[:, c] - info.mean[c]) / info.std[c])
    assert torch.allclose(normalize(x[0], info), y[0])  # a single image broadcasts too
    with pytest.raises(ValueError, match="float"):
        normalize(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), info)


# --------------------------------------------------------------------------------------- folder


@pytest.mark.parametrize("test_name", ["test", "val"])
def test_folder_loads_train_and_test_or_val(tmp_path: Path, pictures: list[Image.Image], test_name: str) -> None:
    base = tmp_path / "pets"
    _tree(base, "train", {"cat": pictures[0:3], "dog": pictures[3:5]})
    _tree(base, test_name, {"cat": pictures[5:6], "dog": pictures[6:8]}, ext=".BMP")
    loaded = load_dataset(f"folder:{base}")
    info = loaded.info
    assert (info.name, info.classes, info.image_size, info.crop_padding) == (f"folder:{base}", ("cat", "dog"), 32, 4)
    assert (info.macro, (info.mean, info.std)) == ("cifar10", catalogue.CIFAR10_STATS)
    images, labels = loaded.train.tensors()
    assert labels.tolist() == [0, 0, 0, 1, 1]
    assert torch.equal(images, torch.stack([_pixels(p) for p in pictures[0:5]]))  # PNG is lossless
    images, labels = loaded.test.tensors()
    assert labels.tolist() == [0, 1, 1]
    assert torch.equal(images, torch.stack([_pixels(p) for p in pictures[5:8]]))


def test_folder_prefers_test_and_resolves_relative_to_root(tmp_path: Path, pictures: list[Image.Image]) -> None:
    base = tmp_path / "root" / "tiny"
    _tree(base, "train", {"a": pictures[:1], "b": pictures[4:5]})
    _tree(base, "test", {"a": pictures[1:3], "b": pictures[5:6]})
    _tree(base, "val", {"a": pictures[3:4], "b": pictures[6:7]})
    loaded = load_dataset("folder:tiny", root=tmp_path / "root")
    assert len(loaded.test) == 3


def test_folder_resizes_to_first_image_and_picks_stats(tmp_path: Path, pictures: list[Image.Image]) -> None:
    base = tmp_path / "big"
    _save(pictures[0].resize((64, 80)), base / "train" / "a" / "0.jpg")  # shorter side 64 sets the size
    _save(pictures[1], base / "train" / "a" / "1.webp")
    _save(pictures[3], base / "train" / "b" / "0.png")
    _save(pictures[2].resize((100, 70)), base / "test" / "a" / "0.jpeg")
    _save(pictures[4], base / "test" / "b" / "0.png")
    loaded = load_dataset(f"folder:{base}")
    info = loaded.info
    assert (info.image_size, info.crop_padding, info.macro) == (64, 8, "tinyimagenet")
    assert (info.mean, info.std) == catalogue.IMAGENET_STATS
    assert loaded.train.tensors()[0].shape == (3, 3, 64, 64)
    assert loaded.test[0][0].shape == (3, 64, 64)


def test_folder_with_many_small_classes_uses_cifar100_macro(tmp_path: Path, pictures: list[Image.Image]) -> None:
    classes = {f"c{i:02d}": [pictures[i]] for i in range(11)}
    _tree(tmp_path, "train", classes)
    _tree(tmp_path, "test", classes)
    assert load_dataset(f"folder:{tmp_path}").info.macro == "cifar100"


# --------------------------------------------------------------------------------------- tinyimagenet


def _tiny(root: Path, pictures: list[Image.Image]) -> list[tuple[str, str]]:
    """A 3-class TinyImageNet layout with 64x64 upscaled images; returns the val (file, wnid) lines."""
    base = root / "tiny-imagenet-200"
    wnids = ["n03", "n01", "n02"]
    for w, wnid in enumerate(wnids):
        for i in range(2):
            _save(pictures[2 * w + i].resize((64, 64)), base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    val = [("val_0.JPEG", "n02"), ("val_1.JPEG", "n03"), ("val_2.JPEG", "n02"), ("val_3.JPEG", "n01")]
    for i, (name, _) in enumerate(val):
        _save(pictures[6 + i].resize((64, 64)), base / "val" / "images" / name)
    lines = [f"{name}\t{wnid}\t0\t0\t63\t63" for name, wnid in val]
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return val


def test_tinyimagenet_layout_loads_with_right_labels(tmp_path: Path, pictures: list[Image.Image]) -> None:
    val = _tiny(tmp_path, pictures)
    loaded = load_dataset("tinyimagenet", root=tmp_path)
    info = loaded.info
    assert info.classes == ("n01", "n02", "n03")
    assert (info.macro, info.image_size, info.crop_padding) == ("tinyimagenet", 64, 8)
    assert (info.mean, info.std) == catalogue.IMAGENET_STATS
    train_images, train_labels = loaded.train.tensors()
    assert train_images.shape == (6, 3, 64, 64) and train_labels.tolist() == [0, 0, 1, 1, 2, 2]
    test_images, test_labels = loaded.test.tensors()
    # Items come class by class (as in ImageFolder), in annotation order within a class.
    order = sorted(range(len(val)), key=lambda i: info.classes.index(val[i][1]))
    assert test_labels.tolist() == [info.classes.index(val[i][1]) for i in order] == [0, 1, 1, 2]
    for item, i in enumerate(order):  # each item shows its own (JPEG-compressed) picture
        source = _pixels(pictures[6 + i].resize((64, 64))).float()
        assert (test_images[item].float() - source).abs().mean() < 8


def test_tinyimagenet_missing_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "tiny-imagenet-200"))):
        load_dataset("tinyimagenet", root=tmp_path)


def test_tinyimagenet_unknown_wnid(tmp_path: Path, pictures: list[Image.Image]) -> None:
    _tiny(tmp_path, pictures)
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match=re.escape(f"{annotations}:5: wnid 'n99'")):
        load_dataset("tinyimagenet", root=tmp_path)


def test_tinyimagenet_annotation_of_missing_file(tmp_path: Path, pictures: list[Image.Image]) -> None:
    _tiny(tmp_path, pictures)
    (tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_2.JPEG").unlink()
    with pytest.raises(DatasetError, match="val_2.JPEG does not exist"):
        load_dataset("tinyimagenet", root=tmp_path)


# --------------------------------------------------------------------------------------- folder errors


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'nowhere'} does not exist")):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")


def test_missing_train(tmp_path: Path, pictures: list[Image.Image]) -> None:
    _tree(tmp_path, "test", {"a": pictures[:1]})
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path} has no train/")):
        load_dataset(f"folder:{tmp_path}")


def test_missing_test_and_val(tmp_path: Path, pictures: list[Image.Image]) -> None:
    _tree(tmp_path, "train", {"a": pictures[:1]})
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path} has neither a test/ nor a val/")):
        load_dataset(f"folder:{tmp_path}")


def test_class_folder_without_images(tmp_path: Path, pictures: list[Image.Image]) -> None:
    _tree(tmp_path, "train", {"a": pictures[:1]})
    _tree(tmp_path, "test", {"a": pictures[:1]})
    (tmp_path / "train" / "b").mkdir()
    (tmp_path / "train" / "b" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'train' / 'b'} contains no images")):
        load_dataset(f"folder:{tmp_path}")


def test_classes_differ(tmp_path: Path, pictures: list[Image.Image]) -> None:
    _tree(tmp_path, "train", {"a": pictures[:1], "b": pictures[1:2], "c": pictures[2:3]})
    _tree(tmp_path, "val", {"a": pictures[:1], "b": pictures[1:2], "d": pictures[2:3]})
    with pytest.raises(DatasetError, match=r"missing from test: \['c'\]; only in test: \['d'\]") as err:
        load_dataset(f"folder:{tmp_path}")
    assert str(tmp_path) in str(err.value)


def test_corrupt_image_is_named(tmp_path: Path, pictures: list[Image.Image]) -> None:
    _tree(tmp_path, "train", {"a": pictures[:2], "b": pictures[2:3]})
    _tree(tmp_path, "test", {"a": pictures[:1], "b": pictures[2:3]})
    bad = tmp_path / "train" / "a" / "001.png"
    bad.write_bytes(b"not a png")
    loaded = load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DatasetError, match=re.escape(f"cannot read image {bad}")):
        loaded.train.tensors()
    with pytest.raises(DatasetError, match=re.escape(f"cannot read image {bad}")):
        loaded.train[1]


def test_corrupt_first_image_fails_at_load(tmp_path: Path, pictures: list[Image.Image]) -> None:
    _tree(tmp_path, "train", {"a": pictures[:1]})
    _tree(tmp_path, "test", {"a": pictures[:1]})
    bad = tmp_path / "train" / "a" / "000.png"
    bad.write_bytes(bad.read_bytes()[:10])
    with pytest.raises(DatasetError, match=re.escape(f"cannot read image {bad}")):
        load_dataset(f"folder:{tmp_path}")


# --------------------------------------------------------------------------------------- cifar


def test_cifar10_offline_fails_without_trying_to_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torchvision.datasets.utils

    def no_download(*args, **kwargs):
        raise AssertionError("offline, the loader must not start a download")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", no_download)
    monkeypatch.setattr(images, "_reachable", lambda url: False)
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz") as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(tmp_path) in str(err.value) and "sample" in str(err.value)


def test_cifar_corrupt_archive_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(images, "_reachable", lambda url: False)
    archive = tmp_path / "cifar-100-python.tar.gz"
    archive.write_bytes(b"truncated")
    with pytest.raises(DatasetError, match=re.escape(f"{archive} is incomplete or corrupt")):
        load_dataset("cifar100", root=tmp_path)


# --------------------------------------------------------------------------------------- one class


def test_a_split_with_one_class_is_refused_naming_the_split(tmp_path: Path, pictures: list[Image.Image]) -> None:
    _tree(tmp_path / "one", "train", {"a": pictures[:3]})
    _tree(tmp_path / "one", "test", {"a": pictures[3:4]})
    for function in (load_dataset, catalogue.check_dataset):
        with pytest.raises(DatasetError, match="the train split of folder:.* has 1 class with images; at least two"):
            function(f"folder:{tmp_path / 'one'}")

    _tiny(tmp_path, pictures)  # three classes to train on, but the test split labels only one
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text("val_0.JPEG\tn02\t0\t0\t63\t63\nval_2.JPEG\tn02\t0\t0\t63\t63\n")
    with pytest.raises(DatasetError, match="the test split of tinyimagenet has 1 class"):
        load_dataset("tinyimagenet", root=tmp_path)


# --------------------------------------------------------------------------------------- the data roots


@pytest.fixture
def confined(tmp_path: Path, pictures: list[Image.Image], monkeypatch: pytest.MonkeyPatch) -> dict:
    """A data root holding ``pets`` (two classes), and a folder of images outside every root."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    _tree(root / "pets", "train", {"cat": pictures[:2], "dog": pictures[2:4]})
    _tree(root / "pets", "test", {"cat": pictures[4:5], "dog": pictures[5:6]})
    _tree(outside, "train", {"cat": pictures[6:8], "dog": pictures[8:10]})
    _tree(outside, "test", {"cat": pictures[10:11], "dog": pictures[11:12]})
    monkeypatch.setenv(paths.DATA_ROOT_ENV, str(root))
    monkeypatch.setenv(paths.DATA_ROOTS_ENV, "")
    return {"root": root, "pets": root / "pets", "outside": outside}


def test_a_symlinked_class_folder_or_image_leading_out_is_refused(confined: dict) -> None:
    pets, outside = confined["pets"], confined["outside"]
    assert len(load_dataset("folder:pets").train) == 4
    (pets / "train" / "bird").symlink_to(outside / "train" / "cat", target_is_directory=True)
    (pets / "test" / "bird").symlink_to(outside / "test" / "cat", target_is_directory=True)
    with pytest.raises(DatasetError, match="bird leads outside the allowed data roots"):
        load_dataset("folder:pets")
    for link in (pets / "train" / "bird", pets / "test" / "bird"):
        link.unlink()

    (pets / "train" / "cat" / "002.png").symlink_to("/etc/passwd")  # a system file posing as an image
    with pytest.raises(DatasetError, match="002.png leads outside the allowed data roots"):
        load_dataset("folder:pets").train.tensors()
    (pets / "train" / "cat" / "002.png").unlink()
    (pets / "train" / "cat" / "002.png").symlink_to(pets / "test" / "cat" / "000.png")  # inside: fine
    assert len(load_dataset("folder:pets").train) == 5


def test_a_folder_swapped_for_a_symlink_after_listing_is_caught_when_read(confined: dict) -> None:
    pets, outside = confined["pets"], confined["outside"]
    loaded = load_dataset("folder:pets")  # listed, not decoded yet (as a worker that has not started)
    real = pets.with_name("pets-moved")
    pets.rename(real)
    pets.symlink_to(outside, target_is_directory=True)
    with pytest.raises(DatasetError, match="leads outside the allowed data roots"):
        loaded.train.tensors()
    with pytest.raises(DatasetError, match="leads outside the allowed data roots"):
        load_dataset("folder:pets")


def test_only_a_path_named_by_the_caller_is_read_outside_the_roots(confined: dict) -> None:
    outside = confined["outside"]
    for spec in (f"folder:{outside}", "folder:../outside"):
        with pytest.raises(DatasetError, match="outside the allowed data roots"):
            load_dataset(spec)
        with pytest.raises(DatasetError, match="outside the allowed data roots"):
            catalogue.check_dataset(spec)
    assert catalogue.outside_roots(f"folder:{outside}") == outside and catalogue.outside_roots("folder:pets") is None
    named = load_dataset(f"folder:{outside}", named_path=True)
    assert len(named.train) == 4 and named.train.tensors()[0].shape == (4, 3, 32, 32)
    (outside / "train" / "cat" / "009.png").symlink_to("/etc/hostname")
    with pytest.raises(DatasetError, match="009.png leads outside"):  # a named folder confines what is under it
        load_dataset(f"folder:{outside}", named_path=True).train.tensors()


@pytest.mark.parametrize(
    "spec, message",
    [
        (" sample", "spaces around it"),
        ("sample ", "spaces around it"),
        ("folder:pets\x00x", "control character"),
        ("folder:" + "p" * 300, "longer than 255 bytes"),
        ("folder:" + "p/" * 3000, "too long"),
        (7, "named by text"),
        (None, "named by text"),
    ],
)
def test_a_malformed_spec_is_refused_alike_by_check_load_and_sizing(confined: dict, spec, message: str) -> None:
    for function in (catalogue.check_dataset, load_dataset, catalogue.dataset_shape):
        with pytest.raises(DatasetError, match=message):
            function(spec)


# --------------------------------------------------------------------------------------- one verdict


def _class_folder_leading_out(pets: Path, outside: Path) -> None:
    for split in ("train", "test"):
        (pets / split / "bird").symlink_to(outside / split / "cat", target_is_directory=True)


def _image_leading_out(pets: Path, outside: Path) -> None:
    (pets / "train" / "cat" / "escape.png").symlink_to(outside / "train" / "cat" / "000.png")


def _fifo_named_like_an_image(pets: Path, outside: Path) -> None:
    os.mkfifo(pets / "train" / "cat" / "cat.png")  # opened for reading, it would block until a writer comes


@pytest.mark.parametrize(
    "breach, message",
    [
        (_class_folder_leading_out, "bird leads outside the allowed data roots"),
        (_image_leading_out, "escape.png leads outside the allowed data roots"),
        (_fifo_named_like_an_image, "cat.png is not a regular file"),
    ],
)
def test_the_launch_check_submit_and_the_loader_give_one_verdict(
    confined: dict, pictures: list[Image.Image], tmp_path: Path, breach, message: str
) -> None:
    """What the worker's loader refuses, the Launch page's check, ``submit_experiment`` and ``submit`` refuse with
    the same message, queueing nothing and making no database."""
    from helpers import cli, one_line_error

    from engine import api

    _tree(confined["pets"], "train", {"cat": pictures * 2, "dog": pictures * 2})  # a full batch for the laptop profile
    config = api.ExperimentConfig(dataset="folder:pets", kernel_sets=("1x1_3x3",), iterations=2, baseline=None)
    assert api.dataset_status("folder:pets") == (True, "on disk") and api.validate(config) == {}
    breach(confined["pets"], confined["outside"])
    with pytest.raises(DatasetError, match=message) as refused:
        data = load_dataset("folder:pets")  # as the worker reads a job's dataset, then decodes it to train
        data.train.tensors(), data.test.tensors()
    verdict = str(refused.value)
    assert api.dataset_status("folder:pets") == (False, verdict)
    store = api.get_store(tmp_path / "api.db")
    with pytest.raises(api.ConfigError) as error:
        api.submit_experiment(config, store=store)
    assert error.value.errors == {"dataset": verdict}
    assert store.db["experiments"].count == store.db["jobs"].count == 0
    db = tmp_path / "cli" / "spikernel.db"
    db.parent.mkdir()
    args = ("--db", str(db), "submit", "--dataset", "folder:pets", "--kernel-sets", "1x1_3x3", "--iterations", "2")
    run = cli(*args, "--baseline", "", "--device", "cpu")
    one_line_error(run, re.escape(message))
    assert run.stderr == f"error: dataset: {verdict}\n" and list(db.parent.iterdir()) == []


def _tinyimagenet(root: Path, pictures: list[Image.Image]) -> Path:
    """TinyImageNet-200's layout in miniature: two wnids of 64x64 JPEGs, ``val/`` labelled by its annotations."""
    base = root / "tiny-imagenet-200"
    for c, wnid in enumerate(("n01443537", "n01629819")):
        for i in range(3):
            _save(pictures[3 * c + i].resize((64, 64)), base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
    lines = []
    for i, wnid in enumerate(("n01443537", "n01629819", "n01443537")):
        _save(pictures[6 + i].resize((64, 64)), base / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def test_tinyimagenet_as_distributed_loads_at_64_pixels(confined: dict, pictures: list[Image.Image]) -> None:
    _tinyimagenet(confined["root"], pictures)
    data = load_dataset("tinyimagenet")
    assert data.info.classes == ("n01443537", "n01629819") and data.info.image_size == 64
    images, labels = data.train.tensors()
    assert images.shape == (6, 3, 64, 64) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.test.tensors()[1].tolist() == [0, 0, 1]  # labelled by val_annotations.txt
    assert catalogue.check_dataset("tinyimagenet") == catalogue.Verdict("on disk", 6)


def _annotation(text: str):
    def breach(base: Path, outside: Path) -> None:
        with (base / "val" / "val_annotations.txt").open("a") as f:
            f.write(text)

    return breach


def _val_image_fifo(base: Path, outside: Path) -> None:
    os.mkfifo(base / "val" / "images" / "val_9.JPEG")
    _annotation("val_9.JPEG\tn01443537\n")(base, outside)


@pytest.mark.parametrize(
    "breach, message",
    [
        (_annotation("val_9.JPEG\tn01443537\n"), "val_annotations.txt:4: image .*val_9.JPEG does not exist"),
        (_annotation("val_0.JPEG\tn99999999\n"), "val_annotations.txt:4: wnid 'n99999999' has no folder"),
        (_annotation("../../../../outside/train/cat/000.png\tn01443537\n"), "leads outside the allowed data roots"),
        (_val_image_fifo, "val_9.JPEG is not a regular file"),
        (lambda base, outside: shutil.rmtree(base / "val" / "images"), "TinyImageNet folder .*images is missing"),
    ],
)
def test_the_launch_check_and_the_loader_give_tinyimagenet_one_verdict(
    confined: dict, pictures: list[Image.Image], breach, message: str
) -> None:
    """The Launch page's check once only looked for the folder, so a job the loader refuses was queued."""
    from engine import api

    base = _tinyimagenet(confined["root"], pictures)
    breach(base, confined["outside"])
    with pytest.raises(DatasetError, match=message) as refused:
        load_dataset("tinyimagenet")
    assert api.dataset_status("tinyimagenet") == (False, str(refused.value))
