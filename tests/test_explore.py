"""The methodology end to end (search, train, checkpoint, table, Alg. 1) on a tiny real subset."""

import dataclasses
import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import ROOT, cli, environment, one_line_error, write_subset

from engine.api import ExperimentConfig, trained_models
from engine.api.explore import DB_NAME, Reporter, explore, load_results
from engine.core.selection import select_model
from engine.store import Store
from engine.train.checkpoint import load_model


@pytest.fixture(scope="module")
def tiny(sample, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # folder datasets must live under the data root
        root = tmp_path_factory.mktemp("data")
        mp.setenv("SPIKERNEL_DATA", str(root))
        write_subset(sample, root / "tiny", classes=2, train_per_class=48, test_per_class=16)
        yield "folder:tiny"


def config(tiny):
    return ExperimentConfig(
        dataset=tiny,
        kernel_sets=("1x1_3x3", "3x3_5x5"),
        iterations=3,
        profile="laptop",
        epochs=1,
        baseline="1x1_3x3_5x",
        device="cpu",
    )


RESULT_COLUMNS = ["setting", "best_genotype", "best_score", "accuracy", "params", "epochs_done"]


class StopAfter(Reporter):
    """Sets ``stop`` once ``n`` candidates of the second setting are scored."""

    def __init__(self, n: int) -> None:
        self.n, self.stop, self.settings = n, threading.Event(), []

    def stage(self, setting, stage, total, done=0):
        self.settings.append(setting)

    def advance(self, done, total, note=""):
        if len(self.settings) > 2 and done >= self.n:
            self.stop.set()


@pytest.mark.slow
def test_stopped_exploration_resumes_to_the_uninterrupted_result(tiny, tmp_path):
    straight = explore(config(tiny), tmp_path / "straight")
    assert list(straight["setting"]) == ["1x1_3x3_5x", "1x1_3x3_3x", "3x3_5x5_3x"]

    stopper = StopAfter(2)
    assert explore(config(tiny), tmp_path / "resumed", reporter=stopper, stop=stopper.stop) is None
    resumed = explore(config(tiny), tmp_path / "resumed")
    assert resumed[RESULT_COLUMNS].equals(straight[RESULT_COLUMNS])


@pytest.mark.slow
def test_results_table_speedups_checkpoints_and_selection(tiny, tmp_path):
    out = tmp_path / "demo"
    runs = explore(config(tiny), out).set_index("setting")
    assert runs.loc["1x1_3x3_5x", "speedup"] == pytest.approx(1.0)
    assert runs.loc["3x3_5x5_3x", "speedup"] == pytest.approx(
        runs.loc["1x1_3x3_5x", "search_seconds"] / runs.loc["3x3_5x5_3x", "search_seconds"]
    )
    for _setting, r in runs.iterrows():
        model = load_model(out / r.checkpoint)
        assert model.genotype.to_str() == r.best_genotype and model.meta["accuracy"] == r.accuracy
        assert model.meta["val_accuracy"] == r.val_accuracy and model.meta["validation"]["fraction"] == 0.1
    csv = (out / "results.csv").read_text().splitlines()
    assert len(csv) == 4 and "accuracy" in csv[0] and csv[0].endswith(",profile,reduced,dataset,error")
    assert json.loads((out / "results.json").read_text())["reduced_profile"] is True
    reloaded = load_results(out)
    # Chosen on validation accuracy (held-out training images), reported with test accuracy.
    best = max(trained_models(reloaded), key=lambda m: (m.validation, -m.params))
    chosen = select_model(trained_models(reloaded), "10M")
    assert chosen.chosen == best and "on validation" in chosen.reason

    # Rerunning a finished exploration recomputes nothing: no search or training stage starts.
    class Stages(Reporter):
        started = []

        def stage(self, setting, stage, total, done=0):
            self.started.append((setting, stage))

    again = explore(config(tiny), out, reporter=Stages())
    assert Stages.started == [] and list(again["accuracy"]) == list(runs["accuracy"])


@pytest.mark.slow
def test_cli_explore_then_select(tiny, tmp_path):
    out = tmp_path / "cli"
    run = cli(
        "explore",
        "--dataset",
        tiny,
        "--kernel-sets",
        "1x1_3x3,3x3_5x5",
        "--iterations",
        "2",
        "--baseline",
        "1x1_3x3_3x",
        "--epochs",
        "1",
        "--budget",
        "10M",
        "--device",
        "cpu",
        "--out",
        str(out),
        timeout=900,
    )
    assert run.returncode == 0, run.stderr
    assert "Alg. 1 picks" in run.stdout and "speed-up" in run.stdout
    smallest = int(load_results(out)["params"].min())
    none = cli("select", str(out), "--budget", str(smallest - 1))
    assert none.returncode == 0 and "nothing fits" in none.stdout
    one = cli("select", str(out), "--budget", str(smallest))
    assert "Alg. 1 picks" in one.stdout
    one_line_error(cli("select", str(out), "--budget", "-3"), "budget")
    clash = cli("explore", "--dataset", tiny, "--kernel-sets", "5x5_7x7", "--iterations", "2", "--out", str(out))
    one_line_error(clash, "other arguments")


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(tiny, tmp_path):
    out = tmp_path / "interrupted"
    args = [
        "explore",
        "--dataset",
        tiny,
        "--kernel-sets",
        "1x1_3x3",
        "--iterations",
        "40",
        "--baseline",
        "",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    env = environment()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the first recorded candidates
        if (out / DB_NAME).exists() and Store(out / DB_NAME).db["candidates"].count:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr  # stopped, as a shell expects of Ctrl-C
    assert "stopped; rerun the same command to resume" in stdout
    store = Store(out / DB_NAME)
    saved = store.candidates(1)
    assert 0 < len(saved) < 40 and store.jobs()[0]["status"] == "queued"
    done = cli(*args, timeout=900)
    assert done.returncode == 0, done.stderr
    final = store.candidates(1)
    assert len(final) == 40 and final[: len(saved)] == saved


def test_a_folder_resumes_with_the_profiles_epochs_left_unset(tiny, tmp_path):
    from engine.api.explore import _experiment_id
    from engine.store import Store

    store = Store(tmp_path / "spikernel.db")
    unset = dataclasses.replace(config(tiny), epochs=None)
    first = _experiment_id(store, unset)
    assert store.experiment(first)["config"]["epochs"] == 10  # the laptop profile's
    assert _experiment_id(store, unset) == first  # the same arguments again: the same exploration
    with pytest.raises(ValueError, match="other arguments"):
        _experiment_id(store, dataclasses.replace(unset, epochs=3))
