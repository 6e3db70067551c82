"""The validation layer as a property: whatever is typed into any command-line argument or given to any
``api`` field, the answer is a one-line ``error:`` with exit code 2 (or a field error), never a traceback,
and nothing is written anywhere. Random strings, numbers and paths, from hypothesis."""

from __future__ import annotations

import argparse
import contextlib
import io
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine import api
from engine.__main__ import main
from engine.cli import build_parser
from engine.cli.worker import ray_address
from engine.core.errors import SpikernelError
from engine.core.selection import Budget, parse_energy_budget
from engine.core.space import Genotype, KernelSet, Setting, SpaceError
from engine.nn.devices import resolve_device

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
GENOTYPE = "0302 0030 0003 0000"

# A cheap, valid command line for every command: each case replaces or adds one argument with a bad value.
# MODEL stands for a real model file; nothing here runs, since the bad value is refused first.
BASE = {
    "search": ["search", "--kernel-set", "1x1_3x3", "--iterations", "1", "--device", "cpu", "--json", "out.json"],
    "profile": ["profile", "--kernel-set", "1x1_3x3", "--genotype", GENOTYPE],
    "train": ["train", "--genotype", GENOTYPE, "--kernel-set", "1x1_3x3", "--epochs", "1", "--device", "cpu"]
    + ["--out", "m.safetensors"],
    "evaluate": ["evaluate", "MODEL", "--device", "cpu"],
    "explore": ["explore", "--kernel-sets", "1x1_3x3", "--iterations", "1", "--epochs", "1", "--baseline", ""]
    + ["--device", "cpu", "--out", "explored"],
    "select": ["select", "explored", "--budget", "10M"],
    "submit": ["submit", "--kernel-sets", "1x1_3x3", "--iterations", "1", "--epochs", "1", "--baseline", ""]
    + ["--device", "cpu"],
    "study": ["study", "--kernel-sets", "1x1_3x3", "--cells", "1", "--sample", "8", "--epochs", "1"]
    + ["--device", "cpu"],
    "study-report": ["study-report", "1", "--out", "report.txt"],
    "jobs": ["jobs"],
    "cancel": ["cancel", "1"],
    "retry": ["retry", "1"],
    "export": ["export", "1", "--out", "export.csv"],
    "export-model": ["export-model", "MODEL", "--format", "int8", "--out", "m8.safetensors"],
    "benchmark import": ["benchmark", "import", "bench.zip", "--out", "bench.json"],
    "benchmark report": ["benchmark", "report", "--scores", "scores.json", "--out", "report.txt"],
    "worker": ["worker", "--idle-exit", "0"],
}


def _fails(parse, text) -> bool:
    try:
        parse(text)
    except (ValueError, TypeError, argparse.ArgumentTypeError, SpikernelError):
        return True
    return False


text = st.text(max_size=80) | st.text(st.characters(codec="utf-8"), min_size=200, max_size=400)
bad_path = st.sampled_from(
    ["a-file/x", "a-file/deeper/x", "a-file//", "p" * 300, "ok/" + "q" * 300 + "/x", "nul\x00name"]
) | st.text(min_size=1, max_size=40).map(lambda t: f"a-file/{t}")


def bad_kernel_sets(t: str) -> bool:
    from engine.core.space import parse_kernel_sets

    return _fails(parse_kernel_sets, t)


# The arguments whose values no argparse type or choice list checks: what is wrong for each, by its name.
FREE_TEXT = {
    "dataset": text.filter(lambda t: t not in ("sample", "cifar10", "cifar100", "tinyimagenet")),
    "kernel_set": text.filter(lambda t: _fails(KernelSet.parse, t)),
    "kernel_sets": text.filter(bad_kernel_sets),
    "genotype": text.filter(lambda t: _fails(Genotype.from_str, t)),
    "baseline": text.filter(lambda t: t != "" and _fails(Setting.parse, t)),
    "budget": text.filter(lambda t: _fails(Budget.parse, t)),
    "energy_budget": text.filter(lambda t: _fails(parse_energy_budget, t)),
    "device": text.filter(lambda t: _fails(resolve_device, t)),
    "name": st.text(min_size=201, max_size=300) | st.text(max_size=10).map(lambda t: t + "\udcff"),
    "ray": text.filter(lambda t: _fails(ray_address, t)),
    # Files and folders to read or write: a path through a file, too long, or with a NUL byte.
    **dict.fromkeys(("json", "out", "model", "folder", "path", "scores"), bad_path),
}


def every_argument() -> list[tuple[str, argparse.Action]]:
    """(command, argument) for every argument that takes a value, of every command and sub-command, read from
    the parser itself: an argument added tomorrow is drawn too (``--db`` has its own test below)."""

    def walk(parser, command: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{command} {name}".strip())
            elif command and action.nargs != 0:  # flags and --help take no value
                yield command, action

    return list(walk(build_parser(), ""))


def wrong_values(action: argparse.Action) -> st.SearchStrategy[str]:
    """Values the command line must refuse for ``action``: outside its choices, outside the bounds its type
    declares (plus junk), or what ``FREE_TEXT`` says is wrong for its name."""
    if action.choices is not None:
        allowed = {str(c) for c in action.choices}
        return text.filter(lambda t: t not in allowed)
    bounds = getattr(action.type, "bounds", None)
    if bounds is not None:
        low, high = bounds
        near = st.sampled_from([low - 1, high + 1, -(10**30), 10**30]) | st.floats(allow_nan=True, allow_infinity=True)
        junk = st.integers().map(str) | near.map(repr) | text
        return junk.filter(lambda t: _fails(action.type, t))
    return FREE_TEXT[action.dest]


ARGUMENTS = every_argument()


def test_every_argument_of_every_command_has_wrong_values_and_a_base_command():
    """The drawn arguments are the parser's, all of them: a new command needs its BASE line, a new free-text
    argument its entry in FREE_TEXT, and every bounded type refuses just past its bounds."""
    assert {command for command, _ in ARGUMENTS} == set(BASE)
    assert len(ARGUMENTS) > 90
    for command, action in ARGUMENTS:
        assert action.choices is not None or hasattr(action.type, "bounds") or action.dest in FREE_TEXT, (
            command,
            action.dest,
        )
        if hasattr(action.type, "bounds"):
            low, high = action.type.bounds
            inside = high if action.type.__name__ == "whole number" else (low + high) / 2
            assert _fails(action.type, repr(high * 2 + 1)) and not _fails(action.type, repr(inside)), action.dest


@pytest.fixture(scope="module")
def model_file(sample, tmp_path_factory):
    """A real model file, outside the folder the tests snapshot."""
    from helpers import EVERY_OP, make_model

    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    make_model(path, sample.info, *EVERY_OP)
    return path


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


def names_it(message: str, action: argparse.Action, value: str) -> bool:
    """Whether a refusal is the argument's own: it names the argument (or the kind of thing it takes) or
    quotes the value, so a case refused for another reason cannot pass."""
    said = " ".join(message.lower().replace("-", " ").replace("_", " ").split())
    words = {action.dest.replace("_", " "), *(o.lstrip("-").replace("-", " ") for o in action.option_strings)}
    words |= set(ALSO_NAMED.get(action.dest, ()))
    quoted = {" ".join(value.split())[:30], repr(value)[1:-1][:30], value.split("/")[0][:30]} - {""}
    return any(w in said for w in words) or any(q in " ".join(message.split()) for q in quoted)


# How a refusal may name an argument other than by its own name.
ALSO_NAMED = {"kernel_sets": ("kernel set",)}


@pytest.mark.parametrize(
    "command, action",
    ARGUMENTS,
    ids=[f"{c} {a.option_strings[0] if a.option_strings else a.dest}" for c, a in ARGUMENTS],
)
def test_a_wrong_value_in_any_argument_is_one_line_exit_2_that_names_it_and_writes_nothing(
    place, model_file, command, action
):
    @settings(SETTINGS, max_examples=12)
    @given(value=wrong_values(action))
    def refuses(value: str) -> None:
        argv = [str(model_file) if a == "MODEL" else a for a in BASE[command]]
        if action.option_strings:
            option = action.option_strings[-1]
            if option in argv:
                i = argv.index(option)
                del argv[i : i + 2]
            argv.append(f"{option}={value}")
        else:  # a positional argument (every command has at most one): last, after "--", so "-x" is a value
            del argv[len(command.split())]
            argv += ["--", value]
        message = refused(argv, place)
        assert names_it(message, action, value), (argv, message)

    refuses()


@SETTINGS
@given(data=st.data())
def test_a_bad_output_path_is_refused_before_any_work(place, data):
    command, argument = data.draw(
        st.sampled_from([("search", "--json"), ("train", "--out"), ("explore", "--out"), ("export", "--out")])
    )
    path = data.draw(
        bad_path | (st.just("a-folder") if argument == "--json" or command in ("train", "export") else st.nothing())
    )
    argv = [a for a in BASE[command]]
    i = argv.index(argument)
    argv[i + 1] = path
    refused(argv, place)


@SETTINGS
@given(data=st.data())
def test_db_refuses_anything_but_this_projects_database(place, data):
    path = data.draw(bad_path | st.sampled_from(["empty.db", "foreign.db", "a-folder", "typo/spikernel.db", "a-file"]))
    command = data.draw(st.sampled_from([["jobs"], ["export", "1"], ["cancel", "1"], ["retry", "1"], BASE["submit"]]))
    refused(["--db", path, *command], place)


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
    @settings(max_examples=300, deadline=None)
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
