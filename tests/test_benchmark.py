"""SpikeNAS-Bench as ground truth: the published layout, the id <-> cell mapping, the compact file, the lookups and
the proxy statistics. Folders of the published layout are built here; the shipped CIFAR-10 file is the project's."""

import itertools
import json
import math

import numpy as np
import pytest
from helpers import cli, one_line_error
from scipy import stats

from engine.core.footprint import footprint
from engine.core.profiles import get_profile
from engine.core.space import SPIKENAS, Genotype, KernelSet
from engine.data.catalogue import dataset_shape
from engine.study import benchmark
from engine.study.benchmark import BenchmarkError, ids_to_ops, ops_to_id

BENCH = get_profile("benchmark")


def engine_params(bench_id: int, dataset: str = "cifar10") -> int:
    return footprint(Genotype(ids_to_ops(bench_id)), SPIKENAS, BENCH, dataset_shape(dataset)).params_torch


def record_text(bench_id: int, *, params=None, epochs=3, test=61.5, firing=None, dataset="cifar10") -> str:
    params = engine_params(bench_id, dataset) if params is None else params
    lines = [
        f"architecture id: {bench_id}",
        f"model parameters: {params}",
        "epoch, train_acc, train_loss, val_acc, val_loss",
    ]
    for e in range(epochs):
        lines.append(f"{e:.3f}, {20 + e:.3f}, {2 - e / 10:.3f}, {30 + 10 * e + bench_id % 7:.3f}, 1.500")
    firing = firing if firing is not None else [0.1] * 12 + [-1.0] * 4
    lines += [
        f"test accuracy: {test:.3f}",
        "firing rate of layers: " + ", ".join(f"{f:.3f}" for f in firing),
        "Elapsed time: 0.0hour47.0minute20.0second",
    ]
    return "\n".join(lines) + "\n"


def published(root, ids, folder="CIFAR10", **kwargs):
    for bench_id in ids:
        d = root / folder / str(bench_id)
        d.mkdir(parents=True)
        (d / "train_process.txt").write_text(record_text(bench_id, **kwargs))
    return root


def test_ids_follow_the_benchmarks_own_edge_order():
    # Id 14067: base-5 digits 2,3,2,2,2,4 over (0,1), (0,2), (0,3), (1,2), (1,3), (2,3)
    assert ids_to_ops(14067) == (2, 3, 2, 2, 2, 4)  # engine order (0,1), (0,2), (1,2), (0,3), (1,3), (2,3)
    assert ids_to_ops(5**2) == (0, 0, 0, 1, 0, 0)  # the third digit is edge (0,3)
    assert all(ops_to_id(ids_to_ops(i)) == i for i in range(benchmark.CELLS))
    with pytest.raises(BenchmarkError, match="outside"):
        ids_to_ops(15_625)


def test_the_published_layout_is_read_exactly(tmp_path):
    published(tmp_path / "data", [0, 14067, 12])
    records = benchmark.read_published(tmp_path)  # found under data/ too
    assert records.ids.tolist() == [0, 12, 14067] and records.dataset == "cifar10"
    row = records.row(14067)
    assert (row.params, row.epochs, row.test_acc, row.train_acc) == (21_607_908, 3, 61.5, 22.0)
    assert row.final_val == pytest.approx(50 + 14067 % 7)
    assert np.isnan(records.firing[0, 12:]).all() and records.firing[0, 0] == pytest.approx(0.1)
    assert records.hours[0] == pytest.approx(47 / 60 + 20 / 3600)
    assert records.conv_edges.tolist() == [0, sum(o >= 2 for o in ids_to_ops(12)), 6]


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda t: t.replace("architecture id: 7", "architecture id: 8"),
            "line 1: architecture id 8 is not its folder's",
        ),
        (lambda t: t.replace("1.000, 21.000", "1.000, abc"), "line 5: expected numbers"),
        (lambda t: t.replace("1.000, 21.000", "1.000, 121.000"), "line 5: expected accuracies between 0 and 100"),
        (lambda t: t.replace("1.000, 21.000", "2.000, 21.000"), "line 5: expected epoch 1, got 2"),
        (lambda t: t.replace("test accuracy", "test acc"), "line 7: expected 'test accuracy: ...'"),
        (lambda t: t.replace("0.100, 0.100, ", "0.100, ", 1), "line 8: expected 16 numbers, got 15"),
        (lambda t: t.replace("0.100, 0.100, ", "0.100, 2.000, ", 1), "line 8: expected firing rates between 0 and 1"),
        (lambda t: t.replace("Elapsed time: 0.0hour", "Elapsed time: soon"), "line 9: expected a time"),
        (lambda t: "", "line 1: expected 'architecture id: ...'"),
    ],
)
def test_a_malformed_record_names_its_file_and_line(tmp_path, damage, message):
    published(tmp_path, [3, 7])
    path = tmp_path / "CIFAR10" / "7" / "train_process.txt"
    path.write_text(damage(path.read_text()))
    with pytest.raises(BenchmarkError) as err:
        benchmark.read_published(tmp_path)
    assert str(err.value).startswith("CIFAR10/7/train_process.txt") and message in str(err.value)


def test_missing_files_and_foreign_folders_are_named(tmp_path):
    published(tmp_path, [3])
    (tmp_path / "CIFAR10" / "4").mkdir()
    with pytest.raises(BenchmarkError, match="CIFAR10/4/train_process.txt: missing"):
        benchmark.read_published(tmp_path)
    (tmp_path / "CIFAR10" / "4").rmdir()
    (tmp_path / "CIFAR10" / "15625").mkdir()
    with pytest.raises(BenchmarkError, match="CIFAR10/15625: not a benchmark id"):
        benchmark.read_published(tmp_path)
    (tmp_path / "CIFAR10" / "15625").rename(tmp_path / "CIFAR10" / "03")  # a second spelling of id 3
    with pytest.raises(BenchmarkError, match="CIFAR10/03: not a benchmark id"):
        benchmark.read_published(tmp_path)
    with pytest.raises(BenchmarkError, match="no CIFAR100/ folder"):
        benchmark.read_published(tmp_path, "cifar100")


def test_the_compact_file_round_trips_exactly_and_refuses_damage(tmp_path):
    records = benchmark.read_published(published(tmp_path / "p", [1, 2, 3000]))
    path = tmp_path / "r.npz"
    benchmark.save(records, path)
    again = benchmark.load(path)
    for name in ("ids", "params", "epochs", "test_acc", "train_acc", "hours", "val_acc", "firing"):
        ours, theirs = getattr(records, name), getattr(again, name)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs, equal_nan=ours.dtype.kind == "f"), name
    assert again.dataset == "cifar10" and len(again) == 3
    good = path.read_bytes()
    path.write_bytes(good[:100])
    with pytest.raises(BenchmarkError, match="not a benchmark file"):
        benchmark.load(path)
    path.write_bytes(good[:500] + bytes(b ^ 0xFF for b in good[500:600]) + good[600:])
    with pytest.raises(BenchmarkError, match="not a benchmark file"):
        benchmark.load(path)
    np.save(tmp_path / "one.npy", np.arange(3))
    with pytest.raises(BenchmarkError, match="not an .npz archive"):
        benchmark.load(tmp_path / "one.npy")
    path.write_bytes(good)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(path, ids=np.arange(3))
    with pytest.raises(BenchmarkError, match="format 1"):
        benchmark.load(path)
    # every array present, one of them as floats: refused rather than read wrong
    np.savez(path, **{**arrays, "test_acc": arrays["test_acc"] / 1000})
    with pytest.raises(BenchmarkError, match="test_acc is stored as float64, not int32"):
        benchmark.load(path)


def test_the_shipped_cifar10_records_are_the_whole_space_and_match_the_engine():
    records = benchmark.bundled("cifar10")
    assert records.ids.tolist() == list(range(benchmark.CELLS))
    assert set(records.epochs.tolist()) == {100, 200} and (records.epochs == 200).sum() == 690
    assert 87 < np.median(records.test_acc) < 88 and records.test_acc.max() < 90
    row = records.row(14067)
    assert (row.params, row.test_acc) == (21_607_908, pytest.approx(88.18))
    # 15,625 parameter counts no one here wrote, each equal to the engine's count of the same network
    shape = dataset_shape("cifar10")
    assert benchmark.check_params(records, lambda g: footprint(g, SPIKENAS, BENCH, shape).params_torch) == []


def test_only_the_benchmarked_space_and_its_datasets_look_accuracy_up():
    assert benchmark.benchmark_records(SPIKENAS, "sample") is benchmark.bundled("cifar10")
    assert benchmark.benchmark_records(SPIKENAS, "cifar10") is not None
    assert benchmark.benchmark_records(KernelSet(1, 3), "sample") is None
    assert benchmark.benchmark_records(SPIKENAS, "folder:mine") is None


def test_import_checks_every_count_and_writes_nothing_on_a_mismatch(tmp_path):
    published(tmp_path / "bench", [0, 5, 14067])
    out = tmp_path / "r.npz"
    run = cli("benchmark", "import", str(tmp_path / "bench"), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "3 cifar10 networks" in run.stdout and "every published parameter count equals the engine's" in run.stdout
    assert benchmark.load(out).ids.tolist() == [0, 5, 14067]
    # The same layout for another dataset, with that dataset's macro network for the check
    published(tmp_path / "c100", [7, 9], folder="CIFAR100", dataset="cifar100")
    out100 = tmp_path / "c100.npz"
    run = cli("benchmark", "import", str(tmp_path / "c100"), "--dataset", "cifar100", "--out", str(out100))
    assert run.returncode == 0, run.stderr
    assert benchmark.load(out100).dataset == "cifar100"
    # A count that differs: refused, one line, nothing written
    bad = tmp_path / "bad"
    published(bad, [0], params=123)
    run = cli("benchmark", "import", str(bad), "--out", str(tmp_path / "x.npz"))
    one_line_error(run, "network 0: published 123 parameters, the engine counts 17,179,620")
    assert not (tmp_path / "x.npz").exists()


def test_report_ranks_proxies_against_true_accuracy(tmp_path):
    records = benchmark.bundled("cifar10")
    rng = np.random.default_rng(0)
    ids = rng.choice(benchmark.CELLS, size=400, replace=False)
    # A "score" that is the test accuracy itself must come out perfect; written as a search's JSON
    cells = [
        {"genotype": Genotype(ids_to_ops(int(i))).to_str(), "score": float(records.final_val[i]), "firing_rate": 0.1}
        for i in ids
    ]
    scores = tmp_path / "s.json"
    scores.write_text(json.dumps({"kernel_set": "spikenas", "profile": {"name": "oracle"}, "candidates": cells}))
    out = tmp_path / "report.json"
    run = cli("benchmark", "report", "--scores", str(scores), "--searches", "50", "--budget", "20M", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "| score (oracle) |" in run.stdout and "Alg. 1 under 20M parameters" in run.stdout
    source = json.loads(out.read_text())["sources"][0]
    by_name = {r["proxy"]: r for r in source["proxies"]}
    # twins (nodes 1 and 2 swapped) share a score: the networks reported include each scored cell's twin
    assert source["networks"] >= 400
    # (a twin reported with the other's accuracy as its score keeps it just short of 1)
    assert by_name["score (oracle)"]["spearman"] > 0.95 and by_name["conv edges"]["spearman"] < 0.9
    assert source["budget"]["best"]["params"] <= 20e6
    # --common: widths compared on the networks every source scored
    fewer = tmp_path / "fewer.json"
    fewer.write_text(json.dumps({"kernel_set": "spikenas", "profile": {"name": "half"}, "candidates": cells[:150]}))
    run = cli(
        "benchmark",
        "report",
        "--scores",
        str(scores),
        "--scores",
        str(fewer),
        "--common",
        "--searches",
        "20",
        "--out",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    sources = json.loads(out.read_text())["sources"]
    assert [s["label"] for s in sources] == ["oracle", "oracle", "half", "half"]
    assert sources[0]["networks"] == sources[2]["networks"] < source["networks"]
    bad = tmp_path / "k.json"
    bad.write_text(json.dumps({"kernel_set": "1x1_3x3", "profile": "laptop", "candidates": []}))
    run = cli("benchmark", "report", "--scores", str(bad))
    one_line_error(run, "not the benchmark's space spikenas")


# ------------------------------------------------------------------------------------------- statistics


def test_rank_agreement_is_scipys_with_intervals_that_cover_it():
    rng = np.random.default_rng(1)
    x = rng.normal(size=500)
    y = x + rng.normal(size=500)
    r = benchmark.rank_agreement(x, y)
    assert r["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert r["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert r["spearman_ci"][0] < r["spearman"] < r["spearman_ci"][1]
    assert r["kendall_ci"][1] - r["kendall_ci"][0] < r["spearman_ci"][1] - r["spearman_ci"][0]


def test_rank_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(200):
        x = rng.normal(size=200)
        y = 0.5 * x + rng.normal(size=200)
        lo, hi = benchmark.rank_agreement(x, y)["spearman_ci"]
        covered += lo <= 6 / math.pi * math.asin(0.5 / math.sqrt(1.25) / 2) <= hi  # the population Spearman
    assert 180 <= covered <= 198


def test_precision_at_k_and_top_kendall_by_hand():
    proxy = np.array([5, 4, 3, 2, 1.0])
    accuracy = np.array([1, 5, 4, 3, 2.0])
    assert benchmark.precision_at_k(proxy, accuracy, 2) == 0.5  # top-2 {0, 1} vs {1, 2}
    assert benchmark.precision_at_k(proxy, accuracy, 5) == 1.0
    assert benchmark.top_kendall(proxy, accuracy, fraction=0.8) == pytest.approx(1.0)  # the best four in order


def test_precision_at_k_breaks_ties_at_random_in_expectation():
    proxy = np.array([2, 1, 1, 1, 0.0])
    accuracy = np.array([5, 4, 4, 3, 2.0])

    def top(values, order, k):  # the k highest, ties broken by the position of each cell in ``order``
        return set(sorted(range(len(values)), key=lambda i: (-values[i], order.index(i)))[:k])

    orders = list(itertools.permutations(range(5)))
    for k in (1, 2, 3, 4):
        brute = np.mean([len(top(proxy, a, k) & top(accuracy, b, k)) / k for a in orders for b in orders])
        assert benchmark.precision_at_k(proxy, accuracy, k) == pytest.approx(brute), k
    assert benchmark.precision_at_k(proxy, accuracy, 2) == pytest.approx((1 + 1 / 3 * 1 / 2 * 2) / 2)
    with pytest.raises(ValueError):
        benchmark.precision_at_k(proxy, accuracy, 0)


def test_partial_spearman_removes_what_the_control_explains():
    rng = np.random.default_rng(3)
    edges = rng.integers(0, 7, size=2000).astype(float)
    accuracy = edges + rng.normal(size=2000)
    proxy = edges + rng.normal(size=2000) * 0.1  # only counts edges
    assert stats.spearmanr(proxy, accuracy).statistic > 0.8
    assert abs(benchmark.partial_spearman(proxy, accuracy, edges)) < 0.1
    informed = proxy + (accuracy - edges)  # knows what the edges do not
    assert benchmark.partial_spearman(informed, accuracy, edges) > 0.5
    # the textbook first-order partial correlation of the three rank vectors
    r = np.corrcoef([stats.rankdata(v) for v in (informed, accuracy, edges)])
    direct = (r[0, 1] - r[0, 2] * r[1, 2]) / math.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2))
    assert benchmark.partial_spearman(informed, accuracy, edges) == pytest.approx(direct, abs=1e-12)
    # a proxy that is the control rescaled (parameters, given conv edges) says nothing more: undefined, not noise
    assert math.isnan(benchmark.partial_spearman(738_048 * edges + 17e6, accuracy, edges))


def test_regret_of_a_perfect_and_a_useless_proxy():
    rng = np.random.default_rng(4)
    test = rng.uniform(50, 90, size=3000)
    val = test + rng.normal(scale=0.1, size=3000)
    assert benchmark.exhaustive_regret(test, test) == 0
    perfect = benchmark.random_search_regret(test, val, test, 3000, 200)
    useless = benchmark.random_search_regret(rng.normal(size=3000), val, test, 3000, 200)
    # a perfect proxy's pick among 3,000 draws misses the best only when the draws miss it
    assert perfect["mean"] < 0.1 * useless["mean"] and perfect["found_best"] > 0.5
    assert perfect["oracle_mean"] < 0.2


def test_regret_counts_ties_as_random_picks():
    test = np.array([10, 50, 70, 90.0])
    expected = 90 - test.mean()  # a uniformly random cell
    # one draw: the pick is the draw, whatever the proxy, and the oracle has the same draw
    one = benchmark.random_search_regret(-test, test, test, 1, 20_000, seed=1)
    assert one["mean"] == pytest.approx(expected, abs=1) and one["oracle_mean"] == one["mean"]
    # a constant proxy keeps the first cell drawn, not the lowest index (that would lean to cell 0, regret 80)
    flat = benchmark.random_search_regret(np.zeros(4), test, test, 10, 20_000, seed=2)
    assert flat["mean"] == pytest.approx(expected, abs=1)
    assert flat["oracle_found_best"] > 0.9 and flat["oracle_q95"] <= flat["q95"]
    assert benchmark.exhaustive_regret(np.array([1, 1, 0, 0.0]), test) == pytest.approx(90 - 30)
    assert benchmark.exhaustive_regret(np.zeros(4), test) == pytest.approx(expected)


def test_proxy_table_and_its_text():
    rng = np.random.default_rng(5)
    edges = rng.integers(0, 7, size=300).astype(float)
    val = edges + rng.normal(size=300)
    test = val + rng.normal(scale=0.3, size=300)
    rows = benchmark.proxy_table({"val": val, "edges": edges}, val, test, edges, searches=50, iterations=(100, 5000))
    by_name = {r["proxy"]: r for r in rows}
    assert by_name["val"]["spearman"] == pytest.approx(1) and by_name["val"]["p@10"] == 1
    assert math.isnan(by_name["edges"]["partial_spearman"])
    assert [s["iterations"] for s in by_name["val"]["searches"]] == [100]  # 5,000 draws of 300 cells say nothing more
    text = benchmark.format_table(rows)
    assert "| p@10 | p@100 |" in text and "| edges | 300 |" in text and " – | " in text
    assert text.splitlines()[-1].startswith("Picking on validation accuracy itself") and "(100x)" in text


# ---------------------------------------------------------------------------------------- benchmark mode


def test_an_exploration_of_the_benchmarked_space_looks_accuracy_up(tmp_path):
    """Search as ever, then the pick's published record instead of a training: test accuracy reported,
    validation kept beside it, the size of the network the benchmark trained, no model file."""
    from engine.api import ExperimentConfig
    from engine.api.explore import explore

    config = ExperimentConfig(
        dataset="sample",
        kernel_sets=("spikenas",),
        iterations=3,
        baseline=None,
        profile="laptop",
        epochs=1,
        device="cpu",
    )
    runs = explore(config, tmp_path / "x")
    run = runs.iloc[0]
    pick = SPIKENAS.genotype(run.best_genotype)
    record = benchmark.bundled("cifar10").row(ops_to_id(pick.ops))
    assert run.accuracy == pytest.approx(record.test_acc / 100)
    assert run.val_accuracy == pytest.approx(record.final_val / 100)
    assert run.params_torch == record.params and not isinstance(run.checkpoint, str)
    assert run.epochs_done == 0  # nothing was trained


def test_a_study_of_the_benchmarked_space_is_refused_with_the_way_to_measure_it():
    from engine import api

    errors = api.validate_study(
        api.StudyConfig(dataset="sample", kernel_sets=("spikenas",), cells=20, sample=4, top=1, seeds=1)
    )
    assert "benchmark report" in errors["kernel_sets"]
    assert not api.validate_study(
        api.StudyConfig(dataset="sample", kernel_sets=("1x1_3x3",), cells=20, sample=4, top=1, seeds=1)
    )


@pytest.mark.slow
def test_the_results_page_shows_the_score_against_true_accuracy(own_db):
    import threading

    from helpers import app, texts

    from engine import api
    from engine.jobs.worker import serve

    config = api.ExperimentConfig(
        dataset="sample",
        kernel_sets=("spikenas",),
        iterations=12,
        baseline="spikenas_24x",
        epochs=1,
        device="cpu",
        budget="30M",
        name="benchmark page",
    )
    ids = api.submit_experiment(config, store=own_db["store"])
    serve(own_db["store"], devices=["cpu"], idle_exit=0.2, stop=threading.Event())
    runs = api.runs_frame([ids["experiment_id"]], store=own_db["store"])
    assert set(runs["status"]) == {"done"} and runs["val_accuracy"].notna().all()
    at = app("pages/results.py")
    shown = texts(at)
    assert "Nothing was trained here" in shown and "Ground truth" in " ".join(h.value for h in at.header)
    proxies = [d.value for d in at.dataframe if "proxy" in d.value.columns]
    assert len(proxies) == 2 and list(proxies[0]["proxy"]) == ["training-free score", "spike rate (SAR)", "conv edges"]
    assert "Alg. 1 picks" in " ".join(s.value for s in at.success)
