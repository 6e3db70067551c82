"""The validation layer as a property: whatever is typed into any command-line argument or given to any
``api`` field, the answer is a one-line ``error:`` with exit code 2 (or a field error), never a traceback,
and nothing is written anywhere. Random strings, numbers and paths, from hypothesis."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine import api
from engine.__main__ import main
from engine.core.selection import Budget
from engine.core.space import MAX_EPOCHS, MAX_ITERATIONS, Genotype, KernelSet, Setting, SpaceError
from engine.nn.devices import resolve_device

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
GENOTYPE = "0302 0030 0003 0000"

# Cheap, valid commands; each example replaces or adds one argument with a bad value.
BASE = {
    "search": ["search", "--kernel-set", "1x1_3x3", "--iterations", "1", "--device", "cpu", "--json", "out.json"],
    "profile": ["profile", "--kernel-set", "1x1_3x3", "--genotype", GENOTYPE],
    "train": [
        "train",
        "--genotype",
        GENOTYPE,
        "--kernel-set",
        "1x1_3x3",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        "m.safetensors",
    ],
    "explore": [
        "explore",
        "--kernel-sets",
        "1x1_3x3",
        "--iterations",
        "1",
        "--epochs",
        "1",
        "--baseline",
        "",
        "--device",
        "cpu",
        "--out",
        "explored",
    ],
    "submit": [
        "submit",
        "--kernel-sets",
        "1x1_3x3",
        "--iterations",
        "1",
        "--epochs",
        "1",
        "--baseline",
        "",
        "--device",
        "cpu",
    ],
    "jobs": ["jobs"],
    "export": ["export", "1", "--out", "export.csv"],
    "worker": ["worker", "--idle-exit", "0"],
}


def _fails(parse, text) -> bool:
    try:
        parse(text)
    except (ValueError, TypeError):
        return True
    return False


def whole_number_outside(low: int, high: int | None = None) -> st.SearchStrategy[str]:
    outside = st.integers(max_value=low - 1)
    if high is not None:
        outside = outside | st.integers(min_value=high + 1)
    return (
        outside.map(str)
        | st.floats(allow_nan=True, allow_infinity=True).map(repr)
        | st.text().filter(lambda t: not t.strip().lstrip("+-").isdigit())
    )


def bad_number(low: float, *, above: bool = False) -> st.SearchStrategy[str]:
    below = st.floats(max_value=low, exclude_max=not above, allow_nan=False)
    return (
        below.map(repr)
        | st.sampled_from(["nan", "inf", "-inf", "1e999"])
        | st.text().filter(lambda t: _fails(float, t))
    )


text = st.text(max_size=80) | st.text(st.characters(codec="utf-8"), min_size=200, max_size=400)
bad_kernel_set = text.filter(lambda t: _fails(KernelSet.parse, t))
bad_setting = text.filter(lambda t: t != "" and _fails(Setting.parse, t))
bad_budget = text.filter(lambda t: _fails(Budget.parse, t))
bad_genotype = text.filter(lambda t: _fails(Genotype.from_str, t))
bad_dataset = text.filter(lambda t: t not in ("sample", "cifar10", "cifar100", "tinyimagenet"))
bad_device = text.filter(lambda t: _fails(resolve_device, t))
bad_choice = text.filter(
    lambda t: (
        t
        not in (
            "laptop",
            "embedded",
            "paper",
            "fp32",
            "bf16",
            "shared",
            "fresh",
            "yes",
            "no",
            "32",
            "16",
            "8",
            "4",
            "csv",
            "json",
        )
    )
)


def bad_kernel_sets(t: str) -> bool:
    from engine.core.space import parse_kernel_sets

    return _fails(parse_kernel_sets, t)


# (commands, argument, strategy of values that are wrong for it)
ARGUMENTS = [
    (("search",), "--kernel-set", bad_kernel_set),
    (("search", "train", "explore", "submit"), "--dataset", bad_dataset),
    (("search", "explore", "submit"), "--iterations", whole_number_outside(1, MAX_ITERATIONS)),
    (("search", "train", "explore", "submit"), "--seed", whole_number_outside(0)),
    (("search", "train", "explore", "submit"), "--device", bad_device),
    (("search", "profile", "train", "explore", "submit"), "--profile", bad_choice),
    (("search",), "--max-params", whole_number_outside(1)),
    (("search",), "--score-batch", whole_number_outside(1)),
    (("search",), "--draws", whole_number_outside(1)),
    (("search",), "--draw-mode", bad_choice),
    (("search",), "--top", whole_number_outside(1)),
    (("profile", "train"), "--genotype", bad_genotype),
    (("profile",), "--kernel-set", bad_kernel_set),
    (("train", "explore", "submit"), "--epochs", whole_number_outside(1, MAX_EPOCHS)),
    (("train",), "--batch-size", whole_number_outside(1)),
    (("train",), "--lr", bad_number(0, above=True)),
    (("train",), "--weight-decay", bad_number(0)),
    (("train", "explore", "submit"), "--validation", bad_number(0) | st.floats(min_value=1).map(repr)),
    (("train", "explore", "submit"), "--precision", bad_choice),
    (("explore", "submit"), "--kernel-sets", text.filter(bad_kernel_sets)),
    (("explore", "submit"), "--baseline", bad_setting),
    (("explore", "submit"), "--budget", bad_budget),
    (("explore", "submit"), "--bits", bad_choice),
    (("jobs",), "--experiment", whole_number_outside(1)),
    (("export",), "--format", bad_choice),
    (("worker",), "--idle-exit", bad_number(0)),
    (("worker",), "--stale-after", bad_number(0, above=True)),
]


@pytest.fixture
def place(tmp_path, monkeypatch):
    """An empty working folder with a data root and awkward things to write into: a file to write under, a
    folder where a file is expected, an empty and a foreign database."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("SPIKERNEL_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SPIKERNEL_DATA_ROOTS", "")
    monkeypatch.setenv("SPIKERNEL_DB", str(tmp_path / "data" / "none.db"))
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "empty.db").write_bytes(b"")
    with sqlite3.connect(tmp_path / "foreign.db") as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def refused(argv: list[str], root: Path) -> str:
    """Run the command line in this process: it must refuse with one line and exit code 2, writing nothing."""
    before = snapshot(root)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    message = err.getvalue()
    assert code == 2, (argv, code, message)
    assert message.startswith("error: ") and message.count("\n") == 1 and "Traceback" not in message, message
    assert snapshot(root) == before, argv
    return message


@SETTINGS
@given(data=st.data())
def test_a_bad_value_in_any_argument_is_one_line_exit_2_and_writes_nothing(place, data):
    commands, argument, values = data.draw(st.sampled_from(ARGUMENTS))
    command = data.draw(st.sampled_from(commands))
    value = data.draw(values)
    argv = [a for a in BASE[command]]
    if argument in argv:
        i = argv.index(argument)
        del argv[i : i + 2]
    refused([*argv, f"{argument}={value}"], place)


paths = st.sampled_from(["a-file/x", "a-file/deeper/x", "p" * 300, "ok/" + "q" * 300 + "/x", "nul\x00name"]) | st.text(
    min_size=1, max_size=40
).map(lambda t: f"a-file/{t}")


@SETTINGS
@given(data=st.data())
def test_a_bad_output_path_is_refused_before_any_work(place, data):
    command, argument = data.draw(
        st.sampled_from([("search", "--json"), ("train", "--out"), ("explore", "--out"), ("export", "--out")])
    )
    path = data.draw(
        paths | (st.just("a-folder") if argument == "--json" or command in ("train", "export") else st.nothing())
    )
    argv = [a for a in BASE[command]]
    i = argv.index(argument)
    argv[i + 1] = path
    refused(argv, place)


@SETTINGS
@given(data=st.data())
def test_db_refuses_anything_but_this_projects_database(place, data):
    path = data.draw(paths | st.sampled_from(["empty.db", "foreign.db", "a-folder", "typo/spikernel.db", "a-file"]))
    command = data.draw(st.sampled_from([["jobs"], ["export", "1"], ["cancel", "1"], ["retry", "1"], BASE["submit"]]))
    refused(["--db", path, *command], place)


@SETTINGS
@given(data=st.data())
def test_a_positional_argument_gets_a_one_line_error(place, data):
    value = data.draw(text | st.integers().map(str))
    command = data.draw(
        st.sampled_from(
            [
                ["evaluate", "--device", "cpu", "--"],
                ["select", "--budget", "10M", "--"],
                ["cancel", "--"],
                ["retry", "--"],
                ["export", "--"],
            ]
        )
    )
    if command[0] in ("cancel", "retry", "export"):
        assume(_fails(lambda t: int(t) if int(t) >= 1 else int("x"), value))
    refused([*command, value], place)


# ------------------------------------------------------------------------------------------ api

anything = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | text
    | st.lists(st.integers() | text, max_size=3)
    | st.dictionaries(text, st.integers(), max_size=2)
    | st.tuples(text, st.integers())
)
FIELDS = [
    "dataset",
    "kernel_sets",
    "iterations",
    "baseline",
    "profile",
    "epochs",
    "seed",
    "validation",
    "device",
    "precision",
    "budget",
    "bits",
    "name",
]


@SETTINGS
@given(data=st.data())
def test_any_value_of_any_api_field_is_a_field_error_and_writes_nothing(place, data):
    store = api.get_store(place / "data" / "api.db")
    changes = data.draw(st.dictionaries(st.sampled_from(FIELDS), anything, min_size=1, max_size=3))
    config = {
        "dataset": "sample",
        "kernel_sets": ["1x1_3x3"],
        "iterations": 1,
        "epochs": 1,
        "device": "cpu",
        "baseline": None,
        **changes,
    }
    try:
        errors = api.validate(api.ExperimentConfig.from_dict(config))
    except api.ConfigError as e:  # unknown fields only
        errors = e.errors
    assume(errors)  # a valid draw would be queued: that is not this test's business
    before = snapshot(place)
    with pytest.raises(api.ConfigError) as raised:
        api.submit_experiment(config, store=store)
    assert set(raised.value.errors) == set(errors) and set(errors) <= set(changes)
    assert all(isinstance(m, str) and "\n" not in m for m in errors.values())
    assert snapshot(place) == before
    assert store.experiments() == []


def test_the_settings_parser_never_raises_anything_but_a_space_error():
    @settings(max_examples=300, deadline=None, database=None)
    @given(text | st.integers() | st.none())
    def parse(value):
        for function in (Setting.parse, KernelSet.parse):
            try:
                function(value)
            except SpaceError:
                pass

    parse()


def test_the_dashboard_binds_to_this_machine_only():
    import tomllib

    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    run = [line for line in (root / "Makefile").read_text().splitlines() if "streamlit run" in line]
    assert run and all("0.0.0.0" not in line for line in run)


# Any Python value a caller of the API might pass: wrong types, huge and non-finite numbers, lone surrogates.
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec=None, categories=None), max_size=30),
    st.sampled_from(["\udcff", "a\x00b", "1x1_3x3", "40MB", "cpu", "sample", "fp32", 10**400, -(2**64), 2**63]),
    st.binary(max_size=8),
    st.lists(st.one_of(st.text(max_size=8), st.integers()), max_size=3),
    st.tuples(st.text(max_size=8)),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@pytest.mark.parametrize(
    "config, validate",
    [
        (api.ExperimentConfig, lambda c: api.validate(c, check_data=False)),
        (api.StudyConfig, lambda c: api.validate_study(c, check_data=False)),
    ],
    ids=["experiment", "study"],
)
def test_validation_never_raises_whatever_a_field_holds(config, validate):
    """``api.validate`` answers every field's problem by name; it never raises (an OverflowError of a huge
    budget, a UnicodeEncodeError of a lone surrogate, a TypeError of a list where text belongs...)."""
    from dataclasses import fields

    def property_of(field: str):
        @settings(max_examples=60, deadline=None)
        @given(value=ANY_VALUE)
        def answers(value) -> None:
            errors = validate(config(**{field: value}))
            assert isinstance(errors, dict) and all(isinstance(v, str) and v for v in errors.values())

        return answers

    for field in (f.name for f in fields(config)):  # every field gets its own examples
        property_of(field)()
