import json
import re

import pytest
from helpers import ROOT, cli, one_line_error


@pytest.mark.slow
def test_search_prints_a_summary_and_writes_every_candidate(tmp_path):
    out = tmp_path / "out.json"
    run = cli(
        "search",
        "--dataset",
        "sample",
        "--kernel-set",
        "3x3_5x5",
        "--iterations",
        "3",
        "--profile",
        "laptop",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--json",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    assert "genotype" in run.stdout and "3x3_5x5_3x on sample" in run.stdout
    result = json.loads(out.read_text())
    assert result["setting"] == "3x3_5x5_3x" and len(result["candidates"]) == 3
    assert result["best"]["score"] == max(c["score"] for c in result["candidates"])
    assert {"genotype", "score", "params", "conv_edges", "silent_layers", "firing_rate", "seconds"} <= set(
        result["candidates"][0]
    )
    assert "3/3" in run.stderr  # the progress bar
    assert result["score_config"]["count_silent"] is False  # the laptop profile's default


def test_search_score_options_reach_the_scorer(tmp_path):
    out = tmp_path / "out.json"
    run = cli(
        "search",
        "--kernel-set",
        "1x1_3x3",
        "--iterations",
        "2",
        "--device",
        "cpu",
        "--score-batch",
        "8",
        "--draws",
        "2",
        "--draw-mode",
        "fresh",
        "--count-silent",
        "yes",
        "--json",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    cfg = json.loads(out.read_text())["score_config"]
    assert (cfg["batch_size"], cfg["draws"], cfg["shared"], cfg["count_silent"]) == (8, 2, False, True)


def test_profile_lists_every_table_i_kernel_set_offline():
    run = cli("profile", "--dataset", "cifar100", "--profile", "embedded")
    assert run.returncode == 0, run.stderr
    for name in ["1x1_3x3", "1x1_5x5", "3x3_5x5", "1x1_7x7", "3x3_7x7", "5x5_7x7"]:
        assert name in run.stdout


def test_profile_of_one_network_gives_its_layers_and_totals():
    run = cli(
        "profile",
        "--dataset",
        "cifar100",
        "--profile",
        "paper",
        "--kernel-set",
        "1x1_3x3",
        "--genotype",
        "0302 0030 0003 0000",
    )
    assert run.returncode == 0, run.stderr
    assert "head.fc1" in run.stdout and "cell2.e23" in run.stdout
    assert "PyTorch trainable: 19,886,452" in run.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["search", "--kernel-set", "2x2_3x3", "--iterations", "3"], "kernel size 2 is not allowed"),
        (["search", "--kernel-set", "3x3_5x5", "--iterations", "0"], "from 1 to"),
        (["search", "--kernel-set", "3x3_5x5", "--iterations", "ten"], "expected a whole number"),
        (["search", "--kernel-set", "3x3_5x5", "--dataset", "nope"], "unknown dataset"),
        (["search", "--kernel-set", "3x3_5x5", "--device", "cuda:7"], "GPU"),
        (["search", "--kernel-set", "3x3_5x5", "--profile", "huge"], "invalid choice"),
        (["search", "--kernel-set", "3x3_5x5", "--draws", "0"], "from 1 to 1,000"),
        (["profile", "--kernel-set", "1x1_3x3", "--genotype", "0302 0030 0003"], "not a genotype"),
        (["profile", "--dataset", "cifar100", "--genotype", "0302 0030 0003 0000"], "--genotype needs --kernel-set"),
        (["select", "nowhere", "--budget", "5M"], "holds no exploration"),
        (["explore", "--kernel-sets", "3x3", "--out", "x"], "without its pair"),
        (["explore", "--kernel-sets", "1x1_3x3,3x3_4x4", "--out", "x"], "square kernel size|not allowed"),
        (["explore", "--budget", "10M", "--bits", "8", "--out", "x"], "counts parameters"),
        (["explore", "--baseline", "1x1_3x3_99999999999x", "--out", "x"], "from 1 to 1,000,000"),
        (["explore", "--baseline", "1x1_3x3_" + "9" * 30 + "x", "--out", "x"], "from 1 to 1,000,000"),
        (["search", "--kernel-set", "3x3_5x5", "--seed", "-1"], "--seed: expected a whole number from 0 to"),
        (["search", "--kernel-set", "3x3_5x5", "--top", "-1"], "--top: expected a whole number from 1 to 10,000"),
        (["search", "--kernel-set", "3x3_5x5", "--iterations", "1000001"], "from 1 to 1,000,000"),
        (["search", "--kernel-set", "3x3_5x5", "--dataset", " sample"], "spaces around it"),
        (["train", "--genotype", "0302 0030 0003 0000", "--kernel-set", "1x1_3x3", "--lr", "nan"], "--lr"),
        (["profile", "--kernel-set", "1x1_3x3", "--genotype", "0100 0000 0000 0000"], "no path from input to output"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(args, message):
    run = cli(*args)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: ")
    assert re.search(message, run.stderr), run.stderr
    assert not (ROOT / "x").exists()  # refused before anything was written


def test_the_kernel_set_spellings_of_the_readme_read_as_one_set_each():
    from engine.core.space import KernelSet, parse_kernel_sets

    assert parse_kernel_sets("3x3,5x5") == parse_kernel_sets("3,5") == parse_kernel_sets("3x3_5x5") == [KernelSet(3, 5)]
    assert parse_kernel_sets("1x1_3x3,3x3,5x5 5x5_7x7") == [KernelSet(1, 3), KernelSet(3, 5), KernelSet(5, 7)]


@pytest.mark.slow
def test_output_paths_are_checked_before_any_work(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file")
    train = [
        "train",
        "--genotype",
        "0302 0030 0003 0000",
        "--kernel-set",
        "1x1_3x3",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ]
    one_line_error(cli(*train, "--out", str(blocker / "m.safetensors")), "file.txt is a file, not a folder")
    one_line_error(cli(*train, "--out", str(tmp_path)), "is a folder; name a file")
    one_line_error(cli("export", "1", "--out", str(tmp_path)), "is a folder; name a file")
    one_line_error(cli("export", "1", "--out", str(blocker / "x.csv")), "file.txt is a file")
    one_line_error(cli("explore", "--kernel-sets", "1x1_3x3", "--out", str(blocker)), "file.txt is a file")
    one_line_error(cli("search", "--kernel-set", "1x1_3x3", "--json", str(tmp_path)), "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # no state, no temporary file


def test_db_names_only_this_projects_database_and_read_only_commands_change_nothing(tmp_path):
    import sqlite3

    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    before = foreign.read_bytes()
    for command in (["jobs"], ["export", "1"], ["cancel", "1"], ["submit", "--kernel-sets", "1x1_3x3"]):
        one_line_error(cli("--db", str(foreign), *command), "another application's SQLite database")
    assert foreign.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]
    for command in (["jobs"], ["export", "1"], ["retry", "1"]):
        one_line_error(cli("--db", str(tmp_path / "typo" / "s.db"), *command), "no experiment database")
    one_line_error(
        cli("--db", str(tmp_path / "typo" / "s.db"), "submit", "--kernel-sets", "1x1_3x3", "--device", "cpu"),
        "folder .*typo does not exist",
    )
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    one_line_error(cli("--db", str(empty), "jobs"), r"is empty \(0 bytes\)")
    one_line_error(cli("--db", str(tmp_path), "jobs"), "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "other.db"] and empty.read_bytes() == b""


def test_jobs_lists_a_failed_job_without_nan(tmp_path, studio):
    from engine import api
    from engine.store import Store

    store = Store(tmp_path / "s.db")
    api.submit_experiment(
        api.ExperimentConfig(
            dataset=studio["dataset"], kernel_sets=("1x1_3x3",), iterations=3, epochs=1, device="cpu", baseline=None
        ),
        store=store,
    )
    store.end_job(store.claim("host:1", "cpu", stale_after=60), "failed", "RuntimeError: boom")
    store.close()
    run = cli("--db", str(store.path), "jobs")
    assert run.returncode == 0, run.stderr
    assert "RuntimeError: boom" in run.stdout and "nan" not in run.stdout


def test_exhaustive_search_scores_the_first_cells_of_the_seeded_order(tmp_path):
    from engine.core.space import Genotype, KernelSet

    out = tmp_path / "out.json"
    run = cli(
        "search",
        "--exhaustive",
        "--kernel-set",
        "1x1_3x3",
        "--iterations",
        "3",
        "--seed",
        "4",
        "--device",
        "cpu",
        "--score-batch",
        "8",
        "--json",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    assert "1x1_3x3_3x on sample" in run.stdout and "3/3" in run.stderr and "exhaustive search" in run.stderr
    result = json.loads(out.read_text())
    assert result["exhaustive"] is True and result["iterations"] == 3
    assert [Genotype.from_str(c["genotype"]) for c in result["candidates"]] == KernelSet(1, 3).exhaustive_order(4)[:3]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--iterations", "7013"], "at most the 7,012 distinct cells"),
        (["--dedupe"], "already scores each distinct cell once; leave out --dedupe"),
    ],
)
def test_exhaustive_search_refuses_bad_combinations_in_one_line(args, message, tmp_path):
    out = tmp_path / "out.json"
    one_line_error(cli("search", "--exhaustive", "--kernel-set", "1x1_3x3", "--json", str(out), *args), message)
    assert not out.exists()


def test_exhaustive_search_help_gives_the_count_of_distinct_cells():
    from engine.core.space import SPIKENAS, KernelSet

    run = cli("search", "--help")
    assert run.returncode == 0 and "--exhaustive" in run.stdout
    help_text = " ".join(run.stdout.split())
    assert f"all distinct cells: {len(KernelSet(1, 3).distinct_cells()):,} for two kernel sizes" in help_text
    assert f"{len(SPIKENAS.distinct_cells()):,} raw cells of spikenas" in help_text


def numeric_arguments():
    """Every whole-number and number argument of every command, read from the parser itself: a new one
    cannot be left out."""
    from engine.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.choices and isinstance(a.choices, dict))
    for parser in commands.choices.values():
        for sub in [parser] + [p for a in parser._actions if isinstance(a.choices, dict) for p in a.choices.values()]:
            for action in sub._actions:
                if getattr(action.type, "__name__", None) in ("whole number", "number"):
                    yield pytest.param(sub.prog, action, id=f"{sub.prog.split(' ', 1)[1]} {action.dest}")


@pytest.mark.parametrize("prog, action", list(numeric_arguments()))
def test_every_numeric_argument_has_a_named_upper_bound(prog, action):
    """A typo of many digits too many (or an overflowing float) is refused with the range it takes."""
    import argparse

    for text in ("1" + "0" * 25, "1e308", "inf", "nan", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"(to|at most|below) [\d,.e+]+, got"):
            action.type(text)


@pytest.mark.slow
def test_select_reads_an_exploration_and_changes_nothing(tmp_path, studio, finished):
    """`select` re-applies Alg. 1 to a finished exploration's database, opened read-only."""
    import shutil

    from engine import api

    api.get_store().db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the session's database, whole in one file
    shutil.copy(studio["db"], tmp_path / "spikernel.db")
    before = (tmp_path / "spikernel.db").read_bytes()
    done = cli("select", str(tmp_path), "--budget", "40MB", "--bits", "8", "--energy-budget", "1000uJ")
    assert done.returncode == 0, done.stderr
    frame = api.runs_frame([finished["experiment_id"]])
    chosen = api.choose(frame, "40MB", bits=8, energy="1000uJ").chosen
    assert f"experiments/1/{chosen.setting}/model.safetensors" in done.stdout  # Alg. 1's pick, as the API makes it
    assert (tmp_path / "spikernel.db").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spikernel.db"]  # no journal, no WAL left


def test_kernel_sets_all_is_table_i(tmp_path):
    from engine.core.space import TABLE_I
    from engine.store import Store

    db = tmp_path / "s.db"
    done = cli("--db", str(db), "submit", "--kernel-sets", "all", "--iterations", "2", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    runs = Store(db, create=False, readonly=True).query("SELECT kernel_set FROM runs ORDER BY position")
    assert [r["kernel_set"] for r in runs][-len(TABLE_I) :] == [k.name for k in TABLE_I]


def test_a_folder_outside_the_roots_is_read_when_the_command_line_names_it_and_it_says_so(tmp_path, sample):
    from helpers import write_subset

    write_subset(sample, tmp_path / "outside", classes=2, train_per_class=16, test_per_class=4)
    spec = f"folder:{tmp_path / 'outside'}"
    done = cli("search", "--kernel-set", "1x1_3x3", "--iterations", "1", "--dataset", spec, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert f"note: read {tmp_path / 'outside'}, outside the data roots, because this command line names it" in (
        done.stderr
    )


def test_jobs_shows_a_finished_job_complete_whatever_its_last_heartbeat_said(tmp_path, studio):
    from engine import api
    from engine.store import Store

    store = Store(tmp_path / "s.db")
    api.submit_experiment(
        api.ExperimentConfig(
            dataset=studio["dataset"], kernel_sets=("1x1_3x3",), iterations=30, epochs=1, device="cpu", baseline=None
        ),
        store=store,
    )
    lease = store.claim("host:1", "cpu", stale_after=60)
    store.heartbeat(lease, {"stage": "train", "done": 29, "total": 30, "note": "", "eta_seconds": 1.0})
    store.finish_run(lease, {"accuracy": 0.5})  # its last heartbeat said 29 of 30
    store.close()
    run = cli("--db", str(store.path), "jobs")
    assert run.returncode == 0, run.stderr
    assert re.search(r" done +\S* +30/30 ", run.stdout) and "29/30" not in run.stdout, run.stdout


def test_submit_refuses_a_training_split_smaller_than_the_profiles_score_batch(tmp_path, studio):
    """``folder:mini`` has 32 training images: enough for the laptop profile's score batch of 32, not for
    the embedded profile's 128, whose search would fail on its first candidate."""
    from dataclasses import replace

    from engine import api
    from engine.store import Store

    config = api.ExperimentConfig(dataset=studio["mini"], kernel_sets=("1x1_3x3",), device="cpu", baseline=None)
    assert "dataset" not in api.validate(config)
    errors = api.validate(replace(config, profile="embedded"))
    assert errors["dataset"].startswith("the training split holds 32 images"), errors
    assert "embedded profile's score batch of 128" in errors["dataset"]

    db = tmp_path / "s.db"
    Store(db).close()
    before = db.read_bytes()
    args = ("--db", str(db), "submit", "--dataset", studio["mini"], "--kernel-sets", "1x1_3x3", "--device", "cpu")
    one_line_error(
        cli(*args, "--profile", "embedded"), "32 images, fewer than the embedded profile's score batch of 128"
    )
    assert db.read_bytes() == before
