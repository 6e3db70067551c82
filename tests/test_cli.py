import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, text=True, capture_output=True, timeout=timeout
    )


def test_search_prints_a_summary_and_writes_every_candidate(tmp_path):
    out = tmp_path / "out.json"
    run = cli("search", "--dataset", "sample", "--kernel-set", "3x3_5x5", "--iterations", "3", "--profile", "laptop",
              "--seed", "0", "--device", "cpu", "--json", str(out))  # fmt: skip
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
    run = cli("search", "--kernel-set", "1x1_3x3", "--iterations", "2", "--device", "cpu", "--score-batch", "8",
              "--draws", "2", "--draw-mode", "fresh", "--count-silent", "yes", "--json", str(out))  # fmt: skip
    assert run.returncode == 0, run.stderr
    cfg = json.loads(out.read_text())["score_config"]
    assert (cfg["batch_size"], cfg["draws"], cfg["shared"], cfg["count_silent"]) == (8, 2, False, True)


def test_profile_lists_every_table_i_kernel_set_offline():
    run = cli("profile", "--dataset", "cifar100", "--profile", "embedded")
    assert run.returncode == 0, run.stderr
    for name in ["1x1_3x3", "1x1_5x5", "3x3_5x5", "1x1_7x7", "3x3_7x7", "5x5_7x7"]:
        assert name in run.stdout


def test_profile_of_one_network_gives_its_layers_and_totals():
    run = cli("profile", "--dataset", "cifar100", "--profile", "paper", "--kernel-set", "1x1_3x3",
              "--genotype", "0302 0030 0003 0000")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "head.fc1" in run.stdout and "cell2.e23" in run.stdout
    assert "PyTorch trainable: 19,886,452" in run.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["search", "--kernel-set", "2x2_3x3", "--iterations", "3"], "kernel size 2 is not allowed"),
        (["search", "--kernel-set", "3x3_5x5", "--iterations", "0"], "at least 1"),
        (["search", "--kernel-set", "3x3_5x5", "--iterations", "ten"], "invalid int value"),
        (["search", "--kernel-set", "3x3_5x5", "--dataset", "nope"], "unknown dataset"),
        (["search", "--kernel-set", "3x3_5x5", "--device", "cuda:7"], "GPU"),
        (["search", "--kernel-set", "3x3_5x5", "--profile", "huge"], "invalid choice"),
        (["search", "--kernel-set", "3x3_5x5", "--draws", "0"], "at least 1"),
        (["profile", "--kernel-set", "1x1_3x3", "--genotype", "0302 0030 0003"], "not a genotype"),
        (["profile", "--dataset", "cifar100", "--genotype", "0302 0030 0003 0000"], "--genotype needs --kernel-set"),
        (["select", "nowhere", "--budget", "5M"], "holds no exploration"),
        (["explore", "--kernel-sets", "3x3,5x5", "--out", "x"], "not a kernel set|square"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(args, message):
    run = cli(*args)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: ")
    assert re.search(message, run.stderr), run.stderr
