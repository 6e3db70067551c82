import itertools
import random
from dataclasses import dataclass

import pandas as pd
import pytest

from engine.core.selection import Budget, budget_in_bytes, pareto_front, parse_energy_budget, select_model


@dataclass(frozen=True)
class M:
    name: str
    accuracy: float
    params: int


MODELS = [M("a", 0.90, 8_000_000), M("b", 0.93, 12_000_000), M("c", 0.91, 5_000_000), M("d", 0.85, 1_000_000)]


def test_most_accurate_within_a_parameter_budget():
    assert select_model(MODELS, "10M").chosen.name == "c"
    assert select_model(MODELS, "20M").chosen.name == "b"
    assert select_model(MODELS, 1_000_000).chosen.name == "d"  # the budget is inclusive


def test_nothing_fits_says_why():
    sel = select_model(MODELS, "500k")
    assert sel.chosen is None and "nothing fits" in sel.reason and "1 M parameters" in sel.reason
    assert select_model([], "10M").chosen is None


def test_ties_go_to_fewer_parameters():
    tied = [M("big", 0.9, 9_000_000), M("small", 0.9, 3_000_000), M("worse", 0.8, 1_000_000)]
    assert select_model(tied, "10M").chosen.name == "small"
    assert select_model(list(reversed(tied)), "10M").chosen.name == "small"


def test_bytes_at_a_bit_width_versus_parameters():
    # 12 M parameters: 48 MB at 32-bit, 12 MB at 8-bit.
    assert select_model(MODELS, Budget.parse("40MB")).chosen.name == "c"  # 32-bit by default
    assert select_model(MODELS, Budget.parse("40MB", bits=8)).chosen.name == "b"
    assert select_model(MODELS, Budget.parse("12MB", bits=8)).chosen.name == "b"
    assert select_model(MODELS, Budget.parse("11.9MB", bits=8)).chosen.name == "c"
    assert Budget.parse("2MiB").limit == 2 * 2**20


@pytest.mark.parametrize(
    "bad", ["0", "-5M", "nan", "abc", "10 parrots", "", float("nan"), float("inf"), -1, 10**400, True, False]
)
def test_bad_budgets_are_refused(bad):
    with pytest.raises(ValueError, match="budget"):
        select_model(MODELS, bad)


def brute_force_front(points):
    return [
        p
        for p in points
        if not any(
            q.accuracy >= p.accuracy and q.params <= p.params and (q.accuracy, q.params) != (p.accuracy, p.params)
            for q in points
        )
    ]


def test_pareto_front_matches_brute_force():
    rng = random.Random(0)
    for n in [0, 1, 2, 5, 30, 200]:
        points = [M(str(i), rng.choice([0.5, 0.6, 0.7, 0.8, rng.random()]), rng.randint(1, 50)) for i in range(n)]
        front = pareto_front(points)
        expected = brute_force_front(points)
        # Exact duplicates on the front keep one representative.
        assert {(p.accuracy, p.params) for p in front} == {(p.accuracy, p.params) for p in expected}
        assert [p.params for p in front] == sorted(p.params for p in front)
        assert all(a.accuracy < b.accuracy for a, b in itertools.pairwise(front))


def test_a_bit_width_with_a_parameter_budget_is_refused():
    with pytest.raises(ValueError, match="counts parameters"):
        Budget.parse("10M", 8)
    assert Budget.parse("10M").limit == 10e6 and Budget.parse("10MB", 8).bits == 8


def test_benchmarked_models_are_chosen_on_validation_and_report_test_accuracy():
    from engine.api import Model

    a = Model(1, "spikenas_1000x", accuracy=0.88, params=20_000_000, validation=0.86)
    b = Model(2, "spikenas_5000x", accuracy=0.87, params=20_000_000, validation=0.87)
    chosen = select_model([a, b], "25M")
    assert chosen.chosen == b and chosen.chosen.accuracy == 0.87 and "on validation" in chosen.reason
    older = Model(3, "1x1_3x3_1000x", accuracy=0.9, params=1_000_000)  # trained before validation splits: none
    mixed = select_model([a, b, older], "25M")
    assert mixed.chosen == older and "on test (1 of them without a validation accuracy)" in mixed.reason


def trained_runs(rows) -> pd.DataFrame:
    """Finished runs as ``api.runs_frame`` gives them: setting, test accuracy, validation accuracy, parameters."""
    frame = pd.DataFrame(rows, columns=["setting", "accuracy", "val_accuracy", "params"])
    frame["run_id"], frame["stage"], frame["energy_uj"] = range(1, len(frame) + 1), "done", float("nan")
    return frame


def test_alg1_chooses_trained_runs_on_validation_accuracy_and_reports_their_test_accuracy():
    """Where validation and test accuracy order the models differently, validation decides."""
    from engine.api import choose, pareto_models

    runs = trained_runs(
        [
            ("1x1_3x3_1000x", 0.74, 0.70, 1_000_000),  # best on test, not on validation
            ("3x3_5x5_1000x", 0.72, 0.73, 2_000_000),
            ("5x5_7x7_1000x", 0.73, 0.71, 3_000_000),
        ]
    )
    picked = choose(runs, "10M")
    assert picked.chosen.setting == "3x3_5x5_1000x" and "on validation" in picked.reason
    assert picked.chosen.accuracy == 0.72 and picked.chosen.validation == 0.73  # reported: its test accuracy
    # The front judges as Alg. 1 does: 5x5_7x7 is more accurate on test than 3x3_5x5 but not on validation.
    assert [m.setting for m in pareto_models(runs)] == ["1x1_3x3_1000x", "3x3_5x5_1000x"]
    assert choose(runs, "1.5M").chosen.setting == "1x1_3x3_1000x"
    assert choose(runs, "8MB", 16).chosen.setting == "3x3_5x5_1000x"  # 16-bit keeps fp32's accuracies, both
    # Without validation accuracies (trained with none held out) both judge on test accuracy.
    untested = runs.assign(val_accuracy=float("nan"))
    assert choose(untested, "10M").chosen.setting == "1x1_3x3_1000x"
    assert [m.setting for m in pareto_models(untested)] == ["1x1_3x3_1000x"]


def test_pareto_front_on_validation_matches_brute_force():
    rng = random.Random(1)
    for n in [1, 5, 40]:
        points = [V(str(i), rng.random(), rng.randint(1, 30), rng.random()) for i in range(n)]
        front = pareto_front(points)
        judged = [M(p.name, p.validation, p.params) for p in points]
        expected = brute_force_front(judged)
        assert {(p.validation, p.params) for p in front} == {(p.accuracy, p.params) for p in expected}


@dataclass(frozen=True)
class V:
    name: str
    accuracy: float
    params: int
    validation: float


@pytest.mark.parametrize(
    "text, limit, bits",
    [
        ("2500000", 2_500_000, None),
        ("2.5e6", 2_500_000, None),
        ("500k", 500_000, None),
        ("10M", 10_000_000, None),
        ("2G", 2_000_000_000, None),
        ("100B", 100, 32),
        ("4kB", 4_000, 32),
        ("40MB", 40_000_000, 32),
        ("1GB", 1_000_000_000, 32),
        ("1KiB", 1_024, 32),
        ("3MiB", 3 * 2**20, 32),
        ("2GiB", 2 * 2**30, 32),
    ],
)
def test_every_unit_of_a_budget(text, limit, bits):
    """Parameters in units, k, M, G; bytes in B, kB, MB, GB (powers of 1000) and KiB, MiB, GiB (of 1024)."""
    budget = Budget.parse(text)
    assert (budget.limit, budget.bits) == (limit, bits)
    assert budget_in_bytes(text) is (bits is not None)  # the dashboard asks for a bit width exactly then


def test_a_budget_given_as_a_number_counts_parameters_and_any_positive_one_is_taken():
    assert Budget.parse(2_500_000) == Budget(2_500_000) and Budget.parse(2.5e6).bits is None
    assert budget_in_bytes("lots") is False
    one = Budget.parse("1")
    assert one.fits(1) and not one.fits(2)
    assert str(Budget.parse("10M")) == "10 M parameters" and str(Budget.parse("40MB", 8)) == "40 MB at 8-bit"


@dataclass(frozen=True)
class E:
    name: str
    accuracy: float
    params: int
    energy_uj: float | None


# a: most accurate measured, costly; b: frugal; c: the most accurate of all, its energy never measured.
MEASURED = [E("a", 0.90, 1_000_000, 9.0), E("b", 0.80, 2_000_000, 3.0), E("c", 0.95, 500_000, None)]


def test_an_energy_budget_keeps_the_measured_models_within_it():
    assert select_model(MEASURED, "10M").chosen.name == "c"  # memory alone
    assert select_model(MEASURED, "10M", energy=9.0).chosen.name == "a"  # c has no measured energy
    frugal = select_model(MEASURED, "10M", energy=3.0)  # the energy budget is inclusive
    assert frugal.chosen.name == "b" and frugal.reason.endswith("within 10 M parameters and 3 µJ per inference")
    over = select_model(MEASURED, "10M", energy=2.9)
    assert over.chosen is None and "the most frugal model within the memory budget needs 3 µJ" in over.reason
    small = select_model(MEASURED, "1.5M", energy=5.0)  # b is over the memory budget, a over the energy one
    assert small.chosen is None and "needs 9 µJ" in small.reason
    unmeasured = select_model(MEASURED, "0.6M", energy=100.0)
    assert unmeasured.chosen is None and "none of the models within the memory budget has a measured energy" in (
        unmeasured.reason
    )


@pytest.mark.parametrize(
    "text, microjoules",
    [("2.5", 2.5), ("2.5uJ", 2.5), (" 2.5 µJ ", 2.5), ("800nJ", 0.8), ("0.01mJ", 10.0), (3, 3.0), (0.5, 0.5)],
)
def test_an_energy_budget_is_microjoules_per_inference(text, microjoules):
    assert parse_energy_budget(text) == pytest.approx(microjoules)


def test_no_energy_budget_and_bad_ones():
    assert parse_energy_budget(None) is None and parse_energy_budget("") is None and parse_energy_budget("  ") is None
    for bad in ("0", "-1uJ", "0nJ", "5 volts", "inf", 0, -2.0, float("inf"), float("nan"), True, 10**400):
        with pytest.raises(ValueError, match="energy budget"):
            parse_energy_budget(bad)
