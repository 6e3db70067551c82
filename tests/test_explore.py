"""The methodology end to end (search, train, checkpoint, table, Alg. 1) on a tiny real subset."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from engine.checkpoint import load_model
from engine.explore import ExploreConfig, Reporter, explore, load_results
from engine.select import select_model
from helpers import ROOT, cli, write_subset


@pytest.fixture(scope="module")
def tiny(sample, tmp_path_factory):
    return write_subset(sample, tmp_path_factory.mktemp("tiny"), classes=2, train_per_class=48, test_per_class=16)


def config(tiny):
    return ExploreConfig(dataset=tiny, settings=("1x1_3x3_3x", "3x3_5x5_3x"), profile="laptop", epochs=1,
                         baseline="1x1_3x3_5x", device="cpu")  # fmt: skip


def test_stopped_exploration_resumes_to_the_uninterrupted_result(tiny, tmp_path):
    straight = explore(config(tiny), tmp_path / "straight")
    assert [r.setting for r in straight.rows] == ["1x1_3x3_5x", "1x1_3x3_3x", "3x3_5x5_3x"]

    polls = []
    stopped = explore(config(tiny), tmp_path / "resumed", should_stop=lambda: polls.append(1) or len(polls) > 7)
    assert stopped.stopped
    resumed = explore(config(tiny), tmp_path / "resumed")
    assert not resumed.stopped
    for a, b in zip(straight.rows, resumed.rows):
        assert (a.setting, a.genotype, a.best_score, a.accuracy, a.params) == (
            b.setting, b.genotype, b.best_score, b.accuracy, b.params)  # fmt: skip


def test_results_table_speedups_checkpoints_and_selection(tiny, tmp_path):
    out = tmp_path / "demo"
    result = explore(config(tiny), out)
    rows = {r.setting: r for r in result.rows}
    assert rows["1x1_3x3_5x"].speedup == pytest.approx(1.0)
    assert rows["3x3_5x5_3x"].speedup == pytest.approx(rows["1x1_3x3_5x"].search_seconds / rows["3x3_5x5_3x"].search_seconds)
    for r in result.rows:
        model = load_model(out / r.checkpoint)
        assert model.genotype.to_str() == r.genotype and model.meta["accuracy"] == r.accuracy
        assert len(r.history) == 1 and r.history[0]["test_accuracy"] == r.accuracy
    csv = (out / "results.csv").read_text().splitlines()
    assert csv[0].startswith("setting,kernel_set,iterations,accuracy,params") and len(csv) == 4
    assert csv[0].endswith(",profile,reduced_profile") and csv[1].endswith(",laptop,True")
    assert json.loads((out / "results.json").read_text())["reduced_profile"] is True
    reloaded = load_results(out)
    best = max(reloaded, key=lambda r: (r.accuracy, -r.params))
    assert select_model(reloaded, "10M").chosen.setting == best.setting
    # Rerunning a finished exploration recomputes nothing: no search or training stage starts.
    class Stages(Reporter):
        started = []

        def stage(self, setting, stage, total, done=0):
            self.started.append((setting, stage))

    again = explore(config(tiny), out, reporter=Stages())
    assert Stages.started == [] and [r.accuracy for r in again.rows] == [r.accuracy for r in result.rows]


def test_cli_explore_then_select(tiny, tmp_path):
    out = tmp_path / "cli"
    run = cli("explore", "--dataset", tiny, "--kernel-sets", "1x1_3x3,3x3_5x5", "--iterations", "2", "--baseline",
              "1x1_3x3_3x", "--epochs", "1", "--budget", "10M", "--device", "cpu", "--out", str(out), timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Alg. 1 picks" in run.stdout and "speed-up" in run.stdout
    rows = load_results(out)
    smallest = min(r.params for r in rows)
    none = cli("select", str(out), "--budget", str(smallest - 1))
    assert none.returncode == 0 and "nothing fits" in none.stdout
    one = cli("select", str(out), "--budget", str(smallest))
    assert "Alg. 1 picks" in one.stdout
    bad = cli("select", str(out), "--budget", "-3")
    assert bad.returncode == 2 and "budget" in bad.stderr
    clash = cli("explore", "--dataset", tiny, "--kernel-sets", "5x5_7x7", "--iterations", "2", "--out", str(out))
    assert clash.returncode == 2 and "other arguments" in clash.stderr


def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(tiny, tmp_path):
    out = tmp_path / "interrupted"
    args = ["explore", "--dataset", tiny, "--kernel-sets", "1x1_3x3", "--iterations", "40", "--baseline", "",
            "--epochs", "1", "--device", "cpu", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    search = out / "1x1_3x3_40x" / "search.json"
    deadline = time.monotonic() + 300
    while not search.exists() and time.monotonic() < deadline:  # the first periodic save
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "stopped; rerun the same command to resume" in stdout
    saved = json.loads(search.read_text())
    assert not saved["complete"] and 0 < len(saved["candidates"]) < 40
    done = cli(*args, timeout=900)
    assert done.returncode == 0, done.stderr
    final = json.loads(search.read_text())
    assert final["complete"] and len(final["candidates"]) == 40
    assert final["candidates"][: len(saved["candidates"])] == saved["candidates"]
