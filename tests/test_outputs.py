"""The one output rule: an output is absent or a regular file that is none of the command's inputs. A folder,
a FIFO, a symlink or a hard link to an input is refused in one line, exit 2, before any work, and left as it was."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from helpers import cli

from engine.core.files import OutputError, atomic_path, check_output_file, write_atomic

# What a user may point an output at by mistake, each made under ``tmp`` next to ``source``, an input.
TARGETS = {
    "folder": lambda tmp, source: (tmp / "a-folder").mkdir() or tmp / "a-folder",
    "fifo": lambda tmp, source: os.mkfifo(tmp / "a-fifo") or tmp / "a-fifo",
    "symlink to a fifo": lambda tmp, source: (
        os.mkfifo(tmp / "fifo") or (tmp / "link").symlink_to(tmp / "fifo") or tmp / "link"
    ),
    "the input": lambda tmp, source: source,
    "a symlink to the input": lambda tmp, source: (tmp / "input-link").symlink_to(source) or tmp / "input-link",
    "a hard link to the input": lambda tmp, source: os.link(source, tmp / "input-hard") or tmp / "input-hard",
}


def state(path):
    """What is at ``path``: its type and, for a regular file, its bytes (through any symlink)."""
    mode = path.stat().st_mode
    return (stat.S_IFMT(mode), path.read_bytes() if stat.S_ISREG(mode) else None)


@pytest.mark.parametrize("target", TARGETS)
def test_check_output_file_refuses_what_is_not_a_fresh_regular_file(tmp_path, target):
    source = tmp_path / "input.bin"
    source.write_bytes(b"the input")
    out = TARGETS[target](tmp_path, source)
    before = state(out)
    with pytest.raises(OutputError, match="folder|not a regular file|input"):
        check_output_file(out, inputs=[source])
    assert state(out) == before


def test_a_regular_file_or_nothing_is_an_output_and_the_writer_refuses_a_fifo_that_appeared(tmp_path):
    assert check_output_file(tmp_path / "new.json", inputs=[tmp_path / "missing"]) == tmp_path / "new.json"
    (tmp_path / "old.json").write_text("{}")
    assert check_output_file(tmp_path / "old.json", inputs=[tmp_path / "other"])
    os.mkfifo(tmp_path / "late")  # after the check, before the write
    with pytest.raises(OutputError, match="not a regular file"):
        write_atomic(tmp_path / "late", "text")
    assert stat.S_ISFIFO((tmp_path / "late").stat().st_mode)
    assert not list(tmp_path.glob(".late.*"))  # no temporary file left


def commands(studio, model, scores):
    """Every command with an output file, its output given as OUT; a refusal comes before any work."""
    mini = studio["mini"]
    return {
        "search --json": ["search", "--kernel-set", "1x1_3x3", "--iterations", "1", "--dataset", mini, "--json"],
        "train --out": ["train", "--genotype", "0302 0030 0003 0000", "--dataset", mini, "--epochs", "1", "--out"],
        "export --out": ["export", "1", "--out"],
        "study-report --out": ["study-report", "1", "--out"],
        "export-model --out": ["export-model", str(model), "--format", "int8", "--out"],
        "benchmark report --out": ["benchmark", "report", "--scores", str(scores), "--out"],
        "benchmark import --out": ["benchmark", "import", str(Path(scores).parent), "--out"],
    }


# Outputs the rule does not cover, and why: explore writes a folder of results (``check_output_folder``).
FOLDER_OUTPUTS = {"explore --out"}


def test_the_rule_test_covers_every_output_argument_of_the_parser():
    """An output argument added to any command must join ``commands`` (or say why it is not a file)."""
    import argparse

    from engine.cli import build_parser

    def outputs(parser, command=""):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from outputs(sub, f"{command} {name}".strip())
            elif action.dest in ("out", "json"):
                yield f"{command} {action.option_strings[0]}"

    assert set(outputs(build_parser())) == set(commands({"mini": ""}, "", "")) | FOLDER_OUTPUTS


@pytest.mark.slow
def test_every_commands_every_output_follows_the_rule(tmp_path, studio, finished):
    from engine import api

    model = api.checkpoint_path(finished["run_ids"][0], store=api.get_store())
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"candidates": []}))
    inputs = {"the database": studio["db"], "the model": model}
    for name, args in commands(studio, model, scores).items():
        for target in ("folder", "fifo", "a symlink to the input", "a hard link to the input"):
            for what, source in inputs.items():
                if what == "the model" and not name.startswith("export-model"):
                    continue
                folder = tmp_path / f"{len(list(tmp_path.iterdir()))}"
                folder.mkdir()
                out = TARGETS[target](folder, source)
                before = state(out)
                done = cli(*args, str(out))
                assert done.returncode == 2, (name, target, done.stderr)
                assert done.stderr.count("\n") == 1 and done.stderr.startswith("error:"), (name, target, done.stderr)
                assert state(out) == before, (name, target)
                if target in ("folder", "fifo"):
                    break  # the same refusal whatever the input


def test_export_model_of_a_run_never_makes_a_database(tmp_path):
    typo = tmp_path / "typo.db"
    done = cli("--db", str(typo), "export-model", "1", "--format", "int8", "--out", str(tmp_path / "m.safetensors"))
    assert done.returncode == 2 and "there is no experiment database at" in done.stderr
    assert not typo.exists() and not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize(
    "command", [["submit", "--kernel-sets", "1x1_3x3"], ["study", "--kernel-sets", "1x1_3x3", "--detach"]]
)
def test_a_refused_submission_writes_nothing_not_even_the_database(tmp_path, command):
    """A name of bytes that are not UTF-8 (a lone surrogate once decoded) is refused by field, before the
    database is made."""
    db = tmp_path / "new.db"
    done = cli("--db", str(db), *command, "--name", "bad\udcffname")  # the byte 0xff on the command line
    assert done.returncode == 2
    assert done.stderr == "error: name: the name holds bytes that are not UTF-8 text; retype it\n"
    assert list(tmp_path.iterdir()) == []


def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    out = tmp_path / "report.json"
    out.write_text("the old report")
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic_path(out) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disk gone")
    assert out.read_text() == "the old report" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_an_export_that_fails_while_writing_leaves_nothing(tmp_path, sample, monkeypatch):
    """The NIR writer dies half-way through its file: no output, no temporary file beside it."""
    import nir
    from helpers import EVERY_OP, make_model

    from engine import deploy

    loaded = make_model(tmp_path / "m.safetensors", sample.info, *EVERY_OP)

    def dies_half_way(path, graph):
        with open(path, "wb") as f:
            f.write(b"\x89HDF half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nir, "write", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        deploy.export(loaded, "nir", tmp_path / "m.nir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
