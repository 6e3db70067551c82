"""Training, checkpoints and the methodology on tiny real subsets of the bundled sample."""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT, WAIT_S, cli, ctrl_c, end_group, one_line_error, start_in_terminal, wait_for, write_subset

from engine.core.profiles import get_profile
from engine.core.space import Genotype, KernelSet
from engine.data.images import load_dataset
from engine.train.checkpoint import CheckpointError, load_model, read_metadata
from engine.train.training import TrainConfig, train

GENOTYPE = Genotype.from_str("0302 0030 0003 0000")
LAPTOP = get_profile("laptop")


@pytest.fixture(autouse=True)
def temporary_folders_are_a_data_root(tmp_path_factory, monkeypatch) -> None:
    """The datasets built here live in pytest's temporary folder: allowed like a data root."""
    monkeypatch.setenv("SPIKERNEL_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def tiny(sample, tmp_path_factory):
    return write_subset(sample, tmp_path_factory.mktemp("tiny"), classes=2, train_per_class=48, test_per_class=16)


def test_training_learns_on_real_images(sample, tmp_path):
    spec = write_subset(sample, tmp_path, classes=2, train_per_class=150, test_per_class=50)
    data = load_dataset(spec)
    result = train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, TrainConfig(epochs=3, batch_size=32, seed=0, device="cpu"))
    losses = [e.train_loss for e in result.epochs]
    assert losses[-1] < losses[0]
    assert result.accuracy > 0.6  # two classes: chance is 0.5
    assert all(0 < e.firing_rate < 1 and e.seconds > 0 for e in result.epochs)
    assert result.device == "cpu"


def test_same_seed_same_numbers_on_cpu(tiny):
    data = load_dataset(tiny)
    cfg = TrainConfig(epochs=1, batch_size=32, seed=5, device="cpu")
    a = train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, cfg)
    b = train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, cfg)
    assert a.epochs[0].train_loss == b.epochs[0].train_loss
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_result(tiny, tmp_path):
    args = [
        "train",
        "--genotype",
        str(GENOTYPE),
        "--kernel-set",
        "1x1_3x3",
        "--dataset",
        tiny,
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--seed",
        "2",
        "--device",
        "cpu",
    ]
    reference = cli(*args, "--out", str(tmp_path / "straight.safetensors"), timeout=600)
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "killed.safetensors"
    state = tmp_path / "killed.safetensors.state.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not out.exists()  # killed after an epoch, before the end

    resumed = cli(*args, "--out", str(out), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_model(tmp_path / "straight.safetensors"), load_model(out)
    assert a.meta["accuracy"] == b.meta["accuracy"]
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name
    assert not state.exists()


@pytest.mark.slow
def test_ctrl_c_stops_training_at_the_next_batch_and_the_same_command_resumes(tiny, tmp_path):
    out, state = tmp_path / "m.safetensors", tmp_path / "m.safetensors.state.pt"
    args = ["train", "--genotype", str(GENOTYPE), "--kernel-set", "1x1_3x3", "--dataset", tiny, "--epochs", "4"]
    args += ["--batch-size", "32", "--device", "cpu", "--out", str(out)]
    process = start_in_terminal(*args)
    try:
        wait_for(state.exists, "the first epoch's state", process)
        ctrl_c(process)
        stdout, stderr = process.communicate(timeout=WAIT_S)
    finally:
        end_group(process)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr  # a shell's `&&` stops here too
    said = [line for line in stderr.splitlines() if "stopping" in line]
    assert said == ["stopping after the current step (Ctrl-C again to abort)..."], stderr
    *table, last = stdout.splitlines()
    stopped = re.fullmatch(
        rf"stopped after epoch (\d); rerun the same command to resume from {re.escape(str(state))}", last
    )
    assert stopped, stdout
    done = int(stopped[1])
    assert 1 <= done < 4  # stopped mid-way: at the next batch, not at the end
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == done and [r["epoch"] for r in saved["records"]] == list(range(1, done + 1))
    rows = table[2:]  # the header and its rule first
    assert [int(row.split()[0]) for row in rows] == list(range(1, done + 1))  # each epoch said done is in the state
    assert sorted(p.name for p in tmp_path.iterdir()) == [state.name]  # no model yet, no temporary file

    resumed = cli(*args, timeout=WAIT_S)
    assert resumed.returncode == 0, resumed.stderr
    # Resumed, not restarted: the epochs it had are the state's (their measured seconds too), and training shows
    # progress from the next epoch on only.
    assert resumed.stdout.splitlines()[2 : 2 + done] == rows
    assert "epoch 1 loss" not in resumed.stderr and f"epoch {done + 1} loss" in resumed.stderr, resumed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name] and load_model(out).meta["epochs"] == 4


@pytest.mark.slow
def test_checkpoint_round_trip_and_evaluate(tiny, tmp_path):
    out = tmp_path / "m.safetensors"
    run = cli(
        "train",
        "--genotype",
        str(GENOTYPE),
        "--kernel-set",
        "3x3_5x5",
        "--dataset",
        tiny,
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    meta = read_metadata(out)
    assert meta["genotype"] == str(GENOTYPE) and meta["kernel_set"] == "3x3_5x5"
    assert meta["dataset"]["classes"] == ["airplane", "automobile"] and meta["timesteps"] == 5
    assert meta["params"] < meta["params_torch"] and meta["versions"]["torch"] == torch.__version__
    loaded = load_model(out)
    assert loaded.model(torch.rand(5, 2, 3, 32, 32).bernoulli()).shape == (2, 2)
    evaluated = cli("evaluate", str(out), "--dataset", tiny, "--device", "cpu", timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test accuracy {meta['accuracy']:.2%} (recorded {meta['accuracy']:.2%})" in evaluated.stdout


@pytest.mark.slow
def test_bad_model_files_are_refused_clearly(tiny, tmp_path):
    out = tmp_path / "m.safetensors"
    assert (
        cli(
            "train",
            "--genotype",
            str(GENOTYPE),
            "--kernel-set",
            "1x1_3x3",
            "--dataset",
            tiny,
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            str(out),
            timeout=600,
        ).returncode
        == 0
    )
    blob = out.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(truncated)

    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a SpiKernel model"):
        load_model(foreign)

    tampered = tmp_path / "tampered.safetensors"
    flipped = bytearray(blob)
    flipped[-5] ^= 0xFF  # a weight byte near the end of the data
    tampered.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="modified"):
        load_model(tampered)

    import pickle

    marker = tmp_path / "unpickled"

    class Payload:  # a pickle that, once loaded, leaves a file behind
        def __reduce__(self):
            return (marker.touch, ())

    pickled = tmp_path / "pickle.safetensors"
    torch.save({"w": torch.zeros(3)}, pickled)
    hostile = tmp_path / "hostile.safetensors"
    hostile.write_bytes(pickle.dumps({"w": Payload()}))
    for path in (pickled, hostile):
        with pytest.raises(CheckpointError, match=rf"{path.name} is not a readable safetensors file"):
            load_model(path)
        one_line_error(cli("evaluate", str(path), "--device", "cpu"), rf"{path.name} is not a readable safetensors")
    assert not marker.exists()  # never unpickled

    one_line_error(cli("evaluate", str(truncated), "--device", "cpu"), r"truncated\.safetensors .*truncated or corrupt")


def test_diverging_training_stops_with_a_clear_error(tiny):
    data = load_dataset(tiny)
    from engine.train.training import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="lower learning rate"):
        train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, TrainConfig(epochs=1, lr=1e38, device="cpu"))


def test_bf16_autocast_is_an_option(tiny):
    """bf16 runs the convolutions and linear layers in bfloat16 (seen by a hook on every such layer, in training
    and in evaluation) while the weights stay fp32; fp32 runs everything in float32, and the two differ."""
    from torch import nn

    data = load_dataset(tiny)
    seen: dict[str, set] = {}

    def record(module, _inputs, out):
        if isinstance(module, (nn.Conv2d, nn.Linear)) and isinstance(out, torch.Tensor):
            seen.setdefault("train" if module.training else "eval", set()).add(out.dtype)

    def run(precision):
        seen.clear()
        hook = torch.nn.modules.module.register_module_forward_hook(record)
        try:
            config = TrainConfig(epochs=1, batch_size=32, seed=0, precision=precision, device="cpu")
            return train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, config), dict(seen)
        finally:
            hook.remove()

    bf16, bf16_seen = run("bf16")
    assert bf16_seen == {"train": {torch.bfloat16}, "eval": {torch.bfloat16}}, bf16_seen
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # autocast leaves the weights fp32
    fp32, fp32_seen = run("fp32")
    assert fp32_seen == {"train": {torch.float32}, "eval": {torch.float32}}, fp32_seen
    assert len(bf16.epochs) == 1 and 0 <= bf16.accuracy <= 1
    assert bf16.epochs[0].train_loss != fp32.epochs[0].train_loss  # the same training in other arithmetic
    assert any(not torch.equal(a, b) for a, b in zip(bf16.model.parameters(), fp32.model.parameters()))
    with pytest.raises(ValueError, match="precision must be fp32 or bf16, got 'fp8'"):
        TrainConfig(precision="fp8")


def test_a_state_file_resumes_only_the_training_that_wrote_it(sample, tiny, tmp_path):
    data = load_dataset(tiny)
    state = tmp_path / "m.state.pt"
    first = train(
        GENOTYPE,
        KernelSet(1, 3),
        LAPTOP,
        data,
        TrainConfig(epochs=1, batch_size=32, seed=0, device="cpu"),
        state_path=state,
    )
    written = state.read_bytes()
    other_cell = Genotype.from_str("0302 0030 0004 0000")
    with pytest.raises(
        ValueError,
        match=r"another training \(config.lr 0.1 \(now 0.01\); config.seed 0 \(now 7\); "
        r"genotype '0302 0030 0003 0000' \(now '0302 0030 0004 0000'\)\)",
    ):
        train(
            other_cell,
            KernelSet(1, 3),
            LAPTOP,
            data,
            TrainConfig(epochs=1, batch_size=32, seed=7, lr=0.01, device="cpu"),
            state_path=state,
        )
    for changed in ({"epochs": 2}, {"batch_size": 16}, {"weight_decay": 0.0}, {"validation": 0.2}):
        with pytest.raises(ValueError, match=f"config.{next(iter(changed))}"):
            train(
                GENOTYPE,
                KernelSet(1, 3),
                LAPTOP,
                data,
                TrainConfig(**{"epochs": 1, "batch_size": 32, "seed": 0, "device": "cpu", **changed}),
                state_path=state,
            )
    with pytest.raises(ValueError, match="kernel_set '1x1_3x3'"):
        train(
            GENOTYPE,
            KernelSet(3, 5),
            LAPTOP,
            data,
            TrainConfig(epochs=1, batch_size=32, device="cpu"),
            state_path=state,
        )
    with pytest.raises(ValueError, match="profile.timesteps 5"):
        train(
            GENOTYPE,
            KernelSet(1, 3),
            dataclasses.replace(LAPTOP, timesteps=4),
            data,
            TrainConfig(epochs=1, batch_size=32, device="cpu"),
            state_path=state,
        )
    with pytest.raises(ValueError, match="dataset.train_images"):
        fewer = load_dataset(write_subset(sample, tmp_path / "fewer", classes=2, train_per_class=40, test_per_class=16))
        train(
            GENOTYPE,
            KernelSet(1, 3),
            LAPTOP,
            fewer,
            TrainConfig(epochs=1, batch_size=32, device="cpu"),
            state_path=state,
        )
    assert state.read_bytes() == written  # a refused resume leaves the state alone

    torch.save({k: v for k, v in torch.load(state, weights_only=True).items() if k != "identity"}, state)
    with pytest.raises(ValueError, match="does not say which training"):
        train(
            GENOTYPE,
            KernelSet(1, 3),
            LAPTOP,
            data,
            TrainConfig(epochs=1, batch_size=32, device="cpu"),
            state_path=state,
        )
    state.write_bytes(written)
    same = train(
        GENOTYPE,
        KernelSet(1, 3),
        LAPTOP,
        data,
        TrainConfig(epochs=1, batch_size=32, seed=0, device="cpu"),
        state_path=state,
    )
    assert same.epochs == first.epochs  # the same training: resumed (here: already complete)


def test_a_state_of_another_format_version_is_refused_saying_so_and_left_alone(tiny, tmp_path):
    """A state file records its layout's version; one of another version (older, newer, none) is never guessed at:
    the refusal names both versions, in one line on the command line, and the file stays as it was."""
    from engine.train.training import STATE_FORMAT, TrainStateMismatch

    data = load_dataset(tiny)
    out, state = tmp_path / "m.safetensors", tmp_path / "m.safetensors.state.pt"
    config = TrainConfig(epochs=1, batch_size=32, seed=0, device="cpu")  # as the command line below asks
    train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, config, state_path=state)
    current = torch.load(state, weights_only=True)
    assert current["identity"]["format"] == STATE_FORMAT == "spikernel-train-state/2"
    args = ["train", "--genotype", str(GENOTYPE), "--kernel-set", "1x1_3x3", "--dataset", tiny, "--epochs", "1"]
    args += ["--batch-size", "32", "--seed", "0", "--device", "cpu", "--out", str(out)]
    for version in ("spikernel-train-state/1", "spikernel-train-state/3", None):
        torch.save({**current, "identity": {**current["identity"], "format": version}}, state)
        written = state.read_bytes()
        differs = rf"format {re.escape(repr(version))} \(now '{STATE_FORMAT}'\)"
        with pytest.raises(
            TrainStateMismatch,
            match=rf"m\.safetensors\.state\.pt holds another training \({differs}\); it was not resumed",
        ):
            train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, config, state_path=state)
        assert state.read_bytes() == written
    one_line_error(cli(*args, timeout=WAIT_S), rf"holds another training \({differs}\); it was not resumed")
    assert state.read_bytes() == written and sorted(p.name for p in tmp_path.iterdir()) == [state.name]


def _rewrite(src, dst, change, *, rehash=True):
    """A copy of a model file with its metadata changed; ``rehash``: with a checksum recomputed to match, as
    someone crafting a file would."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from engine.train.checkpoint import _content_digest, _weights_digest

    with safe_open(str(src), framework="pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    text = json.dumps(change(json.loads(header["spikernel"])))
    sha = _content_digest(text, _weights_digest(tensors)) if rehash else header["sha256"]
    save_file(tensors, str(dst), metadata={"spikernel": text, "sha256": sha})
    return dst


def test_model_metadata_is_checksummed_and_validated_before_anything_is_built(sample, tmp_path):
    from engine.core.footprint import footprint
    from engine.nn.network import build_network
    from engine.train.checkpoint import save_trained

    model = build_network(GENOTYPE, KernelSet(1, 3), LAPTOP, sample.info)
    good = tmp_path / "good.safetensors"
    save_trained(
        good,
        model,
        genotype=GENOTYPE,
        kernel_set=KernelSet(1, 3),
        profile=LAPTOP,
        info=sample.info,
        accuracy=0.5,
        seed=0,
        epochs=1,
    )
    assert load_model(good).meta["accuracy"] == 0.5

    def edit(**fields):
        return lambda m: {**m, **fields}

    for name, change in {"accuracy": edit(accuracy=0.99), "seed": edit(seed=7)}.items():
        with pytest.raises(CheckpointError, match="modified after it was saved"):
            load_model(_rewrite(good, tmp_path / f"{name}.safetensors", change, rehash=False))
        with pytest.raises(CheckpointError, match="modified after it was saved"):
            read_metadata(tmp_path / f"{name}.safetensors")

    huge_classes = [f"c{i}" for i in range(50_000)]
    fp = footprint(GENOTYPE, KernelSet(1, 3), LAPTOP, dataclasses.replace(sample.info, classes=tuple(huge_classes)))
    crafted = {
        "timesteps": (edit(timesteps=10**6), "encoding and timesteps"),
        "width": (
            lambda m: {
                **m,
                "profile": {
                    **m["profile"],
                    "macros": {
                        **m["profile"]["macros"],
                        "cifar10": {**m["profile"]["macros"]["cifar10"], "channels": 20000},
                    },
                },
            },
            "differs from this release's in macros",
        ),
        "profile": (lambda m: {**m, "profile": {**m["profile"], "name": "giant"}}, "profile must be one of"),
        "image size": (lambda m: {**m, "dataset": {**m["dataset"], "image_size": 10**6}}, "image_size must be"),
        "classes": (
            lambda m: {
                **m,
                "dataset": {**m["dataset"], "classes": huge_classes},
                "params": fp.params,
                "params_torch": fp.params_torch,
            },
            "the file holds",
        ),
        "counts": (edit(params=1), "parameter counts"),
        "list": (lambda m: [m], "not an object"),
        "null": (lambda m: None, "not an object"),
        "missing seed": (lambda m: {k: v for k, v in m.items() if k != "seed"}, "missing seed"),
        "seed type": (edit(seed="7"), "seed must be"),
        "accuracy range": (edit(accuracy=2.5), "accuracy must be"),
        "genotype type": (edit(genotype=[0, 3]), "must be text"),
        "dataset null": (edit(dataset=None), "dataset must be an object"),
        "std": (lambda m: {**m, "dataset": {**m["dataset"], "std": [0, 1, 1]}}, r"dataset\.std\[0\] must be"),
    }
    for name, (change, message) in crafted.items():
        path = _rewrite(good, tmp_path / f"{name}.safetensors", change)
        with pytest.raises(CheckpointError, match=message):
            load_model(path)
        with pytest.raises(CheckpointError, match=message):
            read_metadata(path)
    run = cli("evaluate", str(tmp_path / "timesteps.safetensors"), "--device", "cpu")
    assert run.returncode == 2 and "Traceback" not in run.stderr and run.stderr.count("\n") == 1, run.stderr


# ------------------------------------------------------------------------------------- validation split


def test_validation_images_are_disjoint_from_training_per_class_and_fixed_by_the_seed(sample):
    from engine.train.training import validation_split

    labels = sample.train.tensors()[1]
    kept, held = validation_split(labels, 0.1, seed=3)
    assert set(kept.tolist()).isdisjoint(held.tolist())
    assert sorted(kept.tolist() + held.tolist()) == list(range(len(labels)))  # nothing lost, nothing twice
    per_class = torch.bincount(labels[held], minlength=len(sample.info.classes))
    assert per_class.tolist() == [50] * 10  # stratified: a tenth of each class's 500 images
    again_kept, again_held = validation_split(labels, 0.1, seed=3)
    assert torch.equal(kept, again_kept) and torch.equal(held, again_held)  # the same seed, the same images
    assert not torch.equal(held, validation_split(labels, 0.1, seed=4)[1])  # another seed, others
    assert len(validation_split(labels, 0.0, seed=3)[1]) == 0
    few = torch.tensor([0, 0, 0, 1])  # every class keeps a training image, however large the share
    assert torch.bincount(few[validation_split(few, 0.9, seed=0)[0]]).tolist() == [1, 1]


def test_training_never_sees_the_validation_images_and_measures_accuracy_on_them(tiny):
    """Replacing the held-out images changes nothing a training learns, only its validation accuracy."""
    from engine.data.images import ImageData, ImageSplit
    from engine.train.training import DeviceImages, eval_seed, evaluate, validation_seed, validation_split

    data = load_dataset(tiny)
    images, labels = data.train.tensors()
    config = TrainConfig(epochs=1, batch_size=32, seed=1, device="cpu", validation=0.25)
    kept, held = validation_split(labels, 0.25, seed=1)
    batches = []
    result = train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, config, progress=lambda *a: batches.append(a[2]))
    assert batches[0] == -(-len(kept) // 32)  # the epoch's batches cover the training part only
    assert result.validation == {"fraction": 0.25, "images": len(held), "seed": validation_seed(1)} and len(held) == 24
    model = result.model
    expected = evaluate(model, DeviceImages(data.train, torch.device("cpu"), held), data, LAPTOP, seed=eval_seed(1, 1))[
        0
    ]
    assert result.val_accuracy == result.epochs[-1].val_accuracy == expected
    assert result.accuracy == result.epochs[-1].test_accuracy

    noise = images.clone()
    noise[held] = torch.randint(
        0, 256, noise[held].shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    altered = ImageData(data.info, ImageSplit.from_tensors(noise, labels), data.test)
    other = train(GENOTYPE, KernelSet(1, 3), LAPTOP, altered, config)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.model.state_dict().values()))
    assert other.accuracy == result.accuracy

    none = train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, dataclasses.replace(config, validation=0.0))
    assert none.val_accuracy is None and none.validation["images"] == 0 and none.accuracy is not None


@pytest.mark.parametrize("bad", [1, 1.5, -0.1, float("nan"), float("inf"), True, "0.1", 10**400])
def test_a_validation_share_outside_zero_to_one_is_refused(bad):
    from engine.core.errors import InputError

    with pytest.raises(InputError, match="validation"):
        TrainConfig(validation=bad)


def test_a_model_file_records_its_validation_split_and_an_older_file_without_it_loads(tiny, tmp_path):
    from engine.train.checkpoint import save_trained
    from engine.train.training import validation_seed

    data = load_dataset(tiny)
    result = train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, TrainConfig(epochs=1, batch_size=32, seed=2, device="cpu"))
    path = tmp_path / "model.safetensors"
    save_trained(
        path,
        result.model,
        genotype=GENOTYPE,
        kernel_set=KernelSet(1, 3),
        profile=LAPTOP,
        info=data.info,
        accuracy=result.accuracy,
        seed=2,
        epochs=1,
        validation=result.validation,
        val_accuracy=result.val_accuracy,
    )
    meta = load_model(path).meta
    assert meta["validation"] == {"fraction": 0.1, "images": 10, "seed": validation_seed(2)}  # 5 of each class's 48
    assert meta["val_accuracy"] == result.val_accuracy is not None and meta["accuracy"] == result.accuracy

    older = _rewrite(  # as saved before validation splits: neither field
        path, tmp_path / "older.safetensors", lambda m: {k: m[k] for k in m if k not in ("validation", "val_accuracy")}
    )
    loaded = load_model(older)
    assert "validation" not in loaded.meta and loaded.meta["accuracy"] == result.accuracy

    crafted = {
        "fraction": (
            lambda m: {**m, "validation": {**m["validation"], "fraction": 1.5}},
            r"validation\.fraction must be",
        ),
        "images": (lambda m: {**m, "validation": {**m["validation"], "images": -1}}, r"validation\.images must be"),
        "seed": (lambda m: {**m, "validation": {**m["validation"], "seed": "7"}}, r"validation\.seed must be"),
        "shape": (lambda m: {**m, "validation": [0.1]}, r"validation must be empty or an object"),
        "range": (lambda m: {**m, "val_accuracy": 1.5}, "val_accuracy must be"),
        "orphan": (lambda m: {**m, "validation": None}, "val_accuracy needs the validation split"),
        "empty": (lambda m: {**m, "validation": {**m["validation"], "images": 0}}, "holds images"),
    }
    for name, (change, message) in crafted.items():
        with pytest.raises(CheckpointError, match=message):
            read_metadata(_rewrite(path, tmp_path / f"{name}.safetensors", change))


def test_a_state_file_from_before_validation_splits_resumes_with_none_held_out(tiny, tmp_path):
    """A training interrupted before there were validation splits trained on every image: it resumes as such."""
    data = load_dataset(tiny)
    state = tmp_path / "older.state.pt"
    config = TrainConfig(epochs=1, batch_size=32, seed=0, device="cpu", validation=0.0)
    first = train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, config, state_path=state)
    assert "validation" not in torch.load(state, weights_only=True)["identity"]["config"]  # as such a state reads
    assert train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, config, state_path=state).epochs == first.epochs
    with pytest.raises(ValueError, match=r"config.validation None \(now 0.1\)"):
        train(GENOTYPE, KernelSet(1, 3), LAPTOP, data, dataclasses.replace(config, validation=0.1), state_path=state)
