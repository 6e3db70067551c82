"""A model file's metadata has one schema (``checkpoint.METADATA``), checked before anything is built from it.

A model file's checksum is an integrity check anyone can recompute, so the files here are crafted as anyone
could: a value written into the metadata or a tensor replaced, and the checksum recomputed (``resign``). The
property is read from the declaration itself: every declared field, given a value of each JSON type, a number
that breaks things further on, a value just outside its declared bounds, left out, or joined by a field nobody
declared, is refused by ``read_metadata`` and by ``load_model`` with one line naming the field. A field declared
later is covered without touching this file, and one written without a declaration is refused by every load.
Quantised tensors are checked against the network they belong to before anything is dequantised.
"""

from __future__ import annotations

import math
import operator
import re

import pytest
import torch
from helpers import cli, make_model, one_line_error, resign

from engine import deploy
from engine.core import schema
from engine.core.space import MAX_EPOCHS, MAX_SEED
from engine.train.checkpoint import METADATA, CheckpointError, load_model, read_metadata, save_trained

WRONG = {  # a value of each JSON type, and numbers that break things further on
    "text": "text",
    "list": [1],
    "object": {"a": 1},
    "null": None,
    "bool": True,
    "float": 0.5,
    "NaN": math.nan,
    "infinity": math.inf,
    "huge": 10**30,
    "negative": -1,
    "tiny": 1e-308,
}
FIELDS = list(schema.walk(METADATA))[1:]  # (path, declaration) of every field; [0] is the whole object


def named(path: tuple) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) or k == schema.EACH else f".{k}" for k in path).removeprefix(".")


@pytest.fixture(scope="module")
def files(sample, tmp_path_factory):
    """An fp32 model file with every optional field a writer adds (a search job's extras, a validation split),
    its 8-bit export (which adds the rest), and the export's metadata: built once, crafted copies per test."""
    folder = tmp_path_factory.mktemp("model-file")
    built = make_model(folder / "built.safetensors", sample.info, "0302 0030 0003 0000", "1x1_3x3")
    fp32 = folder / "fp32.safetensors"
    save_trained(
        fp32,
        built.model,
        genotype=built.genotype,
        kernel_set=built.kernel_set,
        profile=built.profile,
        info=built.data,
        accuracy=0.5,
        seed=3,
        epochs=2,
        validation={"fraction": 0.1, "images": 100, "seed": 9},
        val_accuracy=0.4,
        extra={"setting": "1x1_3x3_30x", "search_score": 12.5, "device": "cpu"},
    )
    int8 = deploy.write_quantized(load_model(fp32), 8, folder / "int8.safetensors", accuracy=0.5)
    return {"fp32": fp32, "int8": int8, "meta": read_metadata(int8)}


def concrete(meta: dict, path: tuple) -> tuple:
    """``path`` with each ``EACH`` made the first item or entry the file holds there (KeyError: not held)."""
    out, value = [], meta
    for key in path:
        if key == schema.EACH:
            key = 0 if isinstance(value, list) else next(iter(value))
        out.append(key)
        value = value[key]
    return tuple(out)


def at(path: tuple, change):
    """A metadata edit: ``change(parent, key)`` where ``path`` ends."""

    def edit(meta: dict) -> dict:
        parent = meta
        for key in path[:-1]:
            parent = parent[key]
        change(parent, path[-1])
        return meta

    return edit


def put(value):
    return lambda parent, key: operator.setitem(parent, key, value)


def admits(declared, value) -> bool:
    """Whether ``declared`` takes ``value``, read from the declaration's kind and bounds (not from its check)."""
    if isinstance(declared, schema.Maybe):
        return value is None or admits(declared.of, value)
    if not isinstance(declared, schema.Leaf):
        return False  # an object or a list: none of the values tried here is a whole one
    low, high = declared.low, declared.high
    return {
        "text": lambda: type(value) is str and len(value) <= high and value.isprintable(),
        "whole": lambda: type(value) is int and low <= value <= high,
        "number": lambda: (
            type(value) in (int, float) and low <= value <= high and not (declared.below and value == high)
        ),
        "flag": lambda: type(value) is bool,
        "choice": lambda: any(type(value) is type(option) and value == option for option in declared.options),
    }[declared.kind]()


def beyond(declared) -> dict:
    """Values just outside what ``declared`` takes, from its own bounds."""
    leaf = declared.of if isinstance(declared, schema.Maybe) else declared
    if not isinstance(leaf, schema.Leaf) or leaf.kind in ("flag", "choice"):
        return {}
    if leaf.kind == "text":
        return {"too long": "x" * (int(leaf.high) + 1), "a control character": "a\nb", "a lone surrogate": "\ud800"}
    return {"below": leaf.low - 1, "above": leaf.high + 1}


def refused(path, name: str) -> None:
    """Both readers refuse the file at ``path`` with a CheckpointError of one line naming ``name`` (a field, or a
    field inside it), never an exception of another kind."""
    for read in (read_metadata, load_model):
        with pytest.raises(CheckpointError) as refusal:
            read(path)
        message = str(refusal.value).removeprefix(str(path))
        assert "\n" not in message, (read.__name__, message)
        assert re.search(rf"(?<![\w.\[]){re.escape(name)}(?!\w)", message), (read.__name__, name, message)


@pytest.mark.parametrize("path, declared", FIELDS, ids=[named(path) for path, _ in FIELDS])
def test_every_field_refuses_what_its_declaration_does_not_take_in_one_line_naming_it(files, tmp_path, path, declared):
    where = concrete(files["meta"], path)  # the file holds every declared field
    name, crafted = named(where), tmp_path / "crafted.safetensors"
    tried = [value for value in {**WRONG, **beyond(declared)}.values() if not admits(declared, value)]
    assert len(tried) >= 4, tried
    for value in tried:
        refused(resign(files["int8"], crafted, meta=at(where, put(value))), name)
    if not isinstance(declared, schema.Maybe) and path[-1] != schema.EACH:  # required: refused when left out
        refused(resign(files["int8"], crafted, meta=at(where, lambda parent, key: parent.pop(key))), name)
    if isinstance(declared.of if isinstance(declared, schema.Maybe) else declared, schema.Obj):  # no field but its own
        refused(resign(files["int8"], crafted, meta=at((*where, "surplus"), put(1))), name)


def test_the_declaration_bounds_every_number_by_the_limits_the_training_command_takes():
    leaves = {named(path): d.of if isinstance(d, schema.Maybe) else d for path, d in FIELDS}
    numbers = {name: leaf for name, leaf in leaves.items() if getattr(leaf, "kind", None) in ("whole", "number")}
    assert all(leaf.high < math.inf for leaf in numbers.values())
    assert all(leaf.high <= 2**63 - 1 for leaf in numbers.values() if leaf.kind == "whole")  # torch.manual_seed's
    seeds = ("seed", "eval_seed", "validation.seed")
    assert all(numbers[name].high == MAX_SEED for name in seeds) and numbers["epochs"].high == MAX_EPOCHS
    assert numbers["dataset.std[*]"].low >= 1e-6 and numbers["dataset.std[*]"].high <= 1


def test_a_file_as_written_holds_every_declared_field_and_loads(files):
    for path, _ in FIELDS:
        concrete(files["meta"], path)  # held: the property above tries every field
    for path in (files["fp32"], files["int8"]):
        assert load_model(path).meta == read_metadata(path)
    unsplit = {"validation", "val_accuracy"}  # as saved before validation splits
    older = resign(
        files["fp32"],
        files["fp32"].with_name("older.safetensors"),
        meta=lambda m: {k: m[k] for k in m.keys() - unsplit},
    )
    assert unsplit.isdisjoint(load_model(older).meta)


def _replace(name: str, make):
    return lambda tensors: {**tensors, name: make(tensors[name])}


def _first(value):
    """The tensor with its first element made ``value``."""

    def make(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        tensor.view(-1)[0] = value
        return tensor

    return make


WEIGHT = "stem.0.weight"  # quantised in an integer file
TENSOR_CASES = {
    "empty .q": ("int8", WEIGHT, _replace(f"{WEIGHT}.q", lambda q: q.flatten()[:0])),
    "0-dimensional .q": ("int8", WEIGHT, _replace(f"{WEIGHT}.q", lambda q: q.flatten()[0])),
    ".q of another shape": ("int8", WEIGHT, _replace(f"{WEIGHT}.q", lambda q: q.flatten(1))),
    ".q of float32": ("int8", WEIGHT, _replace(f"{WEIGHT}.q", lambda q: q.float())),
    ".q of int16": ("int8", WEIGHT, _replace(f"{WEIGHT}.q", lambda q: q.to(torch.int16))),
    ".q missing": ("int8", WEIGHT, lambda t: {k: v for k, v in t.items() if k != f"{WEIGHT}.q"}),
    ".q outside 8 bits": ("int8", WEIGHT, _replace(f"{WEIGHT}.q", _first(-128))),  # not even int8's -127
    "a scale too few": ("int8", WEIGHT, _replace(f"{WEIGHT}.scale", lambda s: s[:-1])),
    "no scale": ("int8", WEIGHT, _replace(f"{WEIGHT}.scale", lambda s: s[:0])),
    "scales of 2 dimensions": ("int8", WEIGHT, _replace(f"{WEIGHT}.scale", lambda s: s[:, None])),
    "scales of float64": ("int8", WEIGHT, _replace(f"{WEIGHT}.scale", lambda s: s.double())),
    "a NaN scale": ("int8", WEIGHT, _replace(f"{WEIGHT}.scale", _first(math.nan))),
    "a zero scale": ("int8", WEIGHT, _replace(f"{WEIGHT}.scale", _first(0.0))),
    "a negative scale": ("int8", WEIGHT, _replace(f"{WEIGHT}.scale", _first(-1.0))),
    "an infinite scale": ("int8", WEIGHT, _replace(f"{WEIGHT}.scale", _first(math.inf))),
    "the float weight beside its integers": ("int8", WEIGHT, lambda t: {**t, WEIGHT: t[f"{WEIGHT}.q"].float()}),
    "a stray tensor": ("int8", "surplus", lambda t: {**t, "surplus": torch.zeros(3)}),
    "an fp32 weight of another shape": ("fp32", WEIGHT, _replace(WEIGHT, lambda w: w.flatten(1))),
    "an fp32 weight of float64": ("fp32", WEIGHT, _replace(WEIGHT, lambda w: w.double())),
    "an fp32 weight missing": ("fp32", WEIGHT, lambda t: {k: v for k, v in t.items() if k != WEIGHT}),
}


@pytest.mark.parametrize("case", TENSOR_CASES)
def test_tensors_that_are_not_the_networks_are_refused_in_one_line_naming_them(files, tmp_path, case):
    which, name, change = TENSOR_CASES[case]
    refused(resign(files[which], tmp_path / "crafted.safetensors", tensors=change), name)


def test_the_quantised_weights_must_be_the_networks_convolution_and_linear_weights(files, tmp_path):
    dropped = at(("quantization", "weights"), lambda parent, key: parent[key].pop())
    refused(resign(files["int8"], tmp_path / "dropped.safetensors", meta=dropped), "quantization.weights")


def test_evaluate_refuses_a_crafted_file_in_one_line(files, tmp_path):
    crafted = resign(files["fp32"], tmp_path / "crafted.safetensors", meta=at(("profile", "name"), put(["laptop"])))
    one_line_error(cli("evaluate", str(crafted), "--device", "cpu"), r"profile\.name must be text")
