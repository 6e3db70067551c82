"""A resumed training checks its data: the state file records a fingerprint of the training and test images (names,
sizes and a hash of what was read), and a resume on images that changed since is refused, saying what changed."""

from pathlib import Path

import pytest
import torch
from helpers import write_subset

from engine.core.profiles import get_profile
from engine.core.space import Genotype, KernelSet
from engine.data.images import load_dataset
from engine.train.training import TrainConfig, TrainStateMismatch, train

GENOTYPE = Genotype.from_str("0302 0030 0003 0000")
CONFIG = TrainConfig(epochs=2, batch_size=16, seed=0, device="cpu")


def _train(spec: str, state: Path, *, stop_after: int | None = None):
    """The training of ``spec`` with its state in ``state``, read from disk as a new process would; stopped (as by
    Ctrl-C) once ``stop_after`` epochs are done."""
    done = []
    return train(
        GENOTYPE,
        KernelSet(1, 3),
        get_profile("laptop"),
        load_dataset(spec),
        CONFIG,
        state_path=state,
        on_epoch=done.append,
        should_stop=lambda: stop_after is not None and len(done) >= stop_after,
    )


@pytest.fixture
def interrupted(sample, tmp_path, monkeypatch) -> dict:
    """A two-class folder dataset and the state of its training, stopped after the first of two epochs."""
    monkeypatch.setenv("SPIKERNEL_DATA_ROOTS", str(tmp_path))
    spec = write_subset(sample, tmp_path / "pets", classes=2, train_per_class=16, test_per_class=8)
    state = tmp_path / "m.state.pt"
    first = _train(spec, state, stop_after=1)
    assert first.stopped and len(first.epochs) == 1
    return {"spec": spec, "folder": tmp_path / "pets", "state": state, "first": first}


def test_a_resume_on_changed_images_is_refused_saying_what_changed(interrupted) -> None:
    spec, folder, state = interrupted["spec"], interrupted["folder"], interrupted["state"]
    written = state.read_bytes()
    cats = folder / "train" / sorted(p.name for p in (folder / "train").iterdir())[0]
    one, two = cats / "0003.png", cats / "0004.png"
    originals = one.read_bytes(), two.read_bytes()

    one.write_bytes(originals[1])  # another picture under the same name
    with pytest.raises(TrainStateMismatch, match=r"^the training images changed since this training started \(") as e:
        _train(spec, state)
    assert "the same names" in str(e.value) and str(state) in str(e.value) and "\n" not in str(e.value)

    one.write_bytes(originals[1]), two.write_bytes(originals[0])  # two pictures swapped: same names and sizes
    with pytest.raises(
        TrainStateMismatch, match=r"training images changed .*\(the same names and sizes, other content"
    ):
        _train(spec, state)
    one.write_bytes(originals[0]), two.write_bytes(originals[1])

    test_image = next((folder / "test").rglob("0000.png"))
    kept = test_image.read_bytes()
    test_image.write_bytes(originals[0])
    with pytest.raises(TrainStateMismatch, match=r"^the test images changed since this training started"):
        _train(spec, state)
    test_image.write_bytes(kept)
    assert state.read_bytes() == written  # a refused resume leaves the state alone

    resumed = _train(spec, state)  # the images as they were: it resumes
    assert not resumed.stopped and len(resumed.epochs) == 2 and resumed.epochs[0] == interrupted["first"].epochs[0]


def test_a_state_without_a_fingerprint_resumes_and_records_one(interrupted) -> None:
    """A state written before fingerprints resumes (see ``training._load_state``); from its next epoch on, the state
    holds the fingerprint and the data is checked."""
    state = interrupted["state"]
    older = {k: v for k, v in torch.load(state, weights_only=True).items() if k != "data"}
    torch.save(older, state)
    resumed = _train(interrupted["spec"], state)
    assert len(resumed.epochs) == 2 and resumed.epochs[0] == interrupted["first"].epochs[0]
    recorded = torch.load(state, weights_only=True)["data"]
    assert set(recorded) == {"train", "test"} and recorded["train"] != recorded["test"]
