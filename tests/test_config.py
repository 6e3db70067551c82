"""The validation layer at its edges: each field of an experiment is accepted at both ends of its range and
refused just outside, with the field named; the command line's bounded numbers likewise."""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace

import pytest
from PIL import Image

from engine import api
from engine.cli._common import number, whole
from engine.core import MAX_EPOCHS, MAX_IN_FLIGHT, MAX_ITERATIONS, MAX_SEED, get_profile

VALID = api.ExperimentConfig(kernel_sets=("1x1_3x3",), baseline=None, device="cpu")


def errors(**changes) -> dict[str, str]:
    return api.validate(replace(VALID, **changes), check_data=False)


def test_the_defaults_are_valid_and_the_papers_search_on_the_bundled_sample():
    """README: the paper's 1000 iterations against a 5000-iteration baseline, the laptop profile, a tenth of
    the training images held out for validation."""
    default = api.ExperimentConfig()
    assert api.validate(default, check_data=False) == {} and errors() == {}
    assert (default.iterations, default.baseline, default.exhaustive) == (1000, "1x1_3x3_5000x", False)
    assert (default.dataset, default.profile, default.validation) == ("sample", "laptop", 0.1)
    assert (default.precision, default.in_flight, default.budget, default.bits) == ("fp32", 1, None, None)


@pytest.mark.parametrize(
    "field, lowest, highest",
    [
        ("iterations", 1, MAX_ITERATIONS),
        ("epochs", 1, MAX_EPOCHS),
        ("seed", 0, MAX_SEED),
        ("in_flight", 1, MAX_IN_FLIGHT),
    ],
)
def test_whole_numbers_are_taken_at_both_ends_of_their_range_and_refused_outside(field, lowest, highest):
    assert errors(**{field: lowest}) == {} and errors(**{field: highest}) == {}
    for outside in (lowest - 1, highest + 1, True, 2.0, "5"):
        assert set(errors(**{field: outside})) == {field}, outside
    assert f"{highest:,}" in errors(**{field: highest + 1})[field]  # the refusal names the bound


def test_epochs_may_be_left_to_the_profile():
    assert errors(epochs=None) == {}
    assert replace(VALID, epochs=None).with_profile_defaults().epochs == get_profile(VALID.profile).epochs
    assert replace(VALID, epochs=3).with_profile_defaults().epochs == 3


def test_the_validation_share_is_from_zero_to_below_one():
    for share in (0, 0.0, 0.5, 0.999):
        assert errors(validation=share) == {}, share
    for share in (1, 1.0, -0.01, float("nan"), float("inf"), True, "0.1", None):
        assert set(errors(validation=share)) == {"validation"}, share


def test_kernel_sets_baseline_and_exhaustive():
    assert errors(kernel_sets=()) == {"kernel_sets": "pick at least one kernel set"}
    assert errors(kernel_sets=["1x1_3x3", "3x3_5x5"]) == {}
    for bad in (("4x4_6x6",), ("1x1_3x3", 7), "1x1_3x3"):
        assert set(errors(kernel_sets=bad)) == {"kernel_sets"}, bad
    assert errors(baseline="") == {} and errors(baseline="1x1_3x3_5000x") == {}
    assert set(errors(baseline="1x1_3x3")) == {"baseline"}
    assert errors(exhaustive="yes") == {"exhaustive": "exhaustive is true or false"}


def test_an_exhaustive_search_scores_at_most_every_distinct_cell():
    assert api.distinct_cell_count(("1x1_3x3",)) == 7_012
    assert api.distinct_cell_count(("spikenas", "3x3_5x5")) == 7_012 < api.distinct_cell_count(("spikenas",))
    assert errors(exhaustive=True, iterations=7_012, baseline="1x1_3x3_7012x") == {}
    assert set(errors(exhaustive=True, iterations=7_013)) == {"iterations"}
    assert "7,012 distinct cells" in errors(exhaustive=True, iterations=7_013)["iterations"]
    assert set(errors(exhaustive=True, baseline="1x1_3x3_7013x")) == {"baseline"}
    assert errors(exhaustive=False, iterations=7_013, baseline="1x1_3x3_7013x") == {}  # sampling repeats cells


def test_budget_and_bits():
    for budget, bits in (("10M", None), ("40MB", 8), ("40MB", None), (2_500_000, None), (None, None)):
        assert errors(budget=budget, bits=bits) == {}, (budget, bits)
    assert set(errors(budget="10M", bits=8)) == {"budget"}  # a bit width applies to bytes only
    assert set(errors(budget="lots")) == {"budget"} and set(errors(budget=True)) == {"budget"}
    assert errors(bits=8) == {"bits": "a bit width goes with a budget in bytes"}


def test_choices_and_device():
    assert set(errors(profile="huge")) == {"profile"} and set(errors(precision="fp8")) == {"precision"}
    assert errors(precision="bf16") == {} and errors(profile="paper") == {}
    for device in ("", "auto", " CPU "):
        assert errors(device=device) == {}, device
    assert set(errors(device="tpu")) == {"device"} and set(errors(device=0)) == {"device"}


def test_a_name_is_utf8_text_of_at_most_200_characters():
    assert errors(name="x" * 200) == {} and errors(name="") == {}
    assert errors(name="x" * 201) == {"name": "keep the name under 200 characters"}
    assert set(errors(name="bad \udcff byte")) == {"name"} and set(errors(name=7)) == {"name"}


def test_every_problem_is_reported_at_once():
    found = errors(iterations=0, seed=-1, profile="huge", name=None)
    assert set(found) == {"iterations", "seed", "profile", "name"}


def test_a_config_from_json_keeps_its_fields_and_refuses_unknown_ones():
    d = {**asdict(VALID), "kernel_sets": ["1x1_3x3", "3x3_5x5"]}
    assert api.ExperimentConfig.from_dict(d) == replace(VALID, kernel_sets=("1x1_3x3", "3x3_5x5"))
    with pytest.raises(api.ConfigError) as raised:
        api.ExperimentConfig.from_dict({**d, "colour": "red", "age": 3})
    assert raised.value.errors == {"age": "unknown field", "colour": "unknown field"}
    assert str(raised.value) == "age: unknown field; colour: unknown field"


def test_settings_put_the_baseline_first_unless_it_is_searched_anyway():
    config = replace(VALID, kernel_sets=("1x1_3x3", "3x3_5x5"), iterations=100)
    assert [s.name for s in config.settings()] == ["1x1_3x3_100x", "3x3_5x5_100x"]
    with_baseline = replace(config, baseline="1x1_3x3_5000x")
    assert [s.name for s in with_baseline.settings()] == ["1x1_3x3_5000x", "1x1_3x3_100x", "3x3_5x5_100x"]
    assert [s.name for s in replace(config, baseline="3x3_5x5_100x").settings()] == ["1x1_3x3_100x", "3x3_5x5_100x"]
    assert [s.name for s in replace(config, kernel_sets=("3,1", "1x1_3x3")).settings()] == ["1x1_3x3_100x"]


def folder(root, name: str, train_images: int) -> str:
    """A ``folder:`` dataset of two classes with ``train_images`` training images between them."""
    for split, count in (("train", train_images), ("test", 4)):
        for i in range(count):
            out = root / name / split / ("ab"[i % 2])
            out.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (i, 0, 0)).save(out / f"{i}.png")
    return f"folder:{name}"


def test_a_training_split_as_large_as_the_score_batch_is_enough(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKERNEL_DATA", str(tmp_path))
    monkeypatch.setenv("SPIKERNEL_DATA_ROOTS", "")
    batch = get_profile("laptop").score.batch_size
    assert api.validate(replace(VALID, dataset=folder(tmp_path, "enough", batch))) == {}
    short = api.validate(replace(VALID, dataset=folder(tmp_path, "short", batch - 1)))
    assert set(short) == {"dataset"} and short["dataset"].startswith(f"the training split holds {batch - 1} images")
    assert set(api.validate(replace(VALID, dataset="folder:missing"))) == {"dataset"}
    unknown = api.validate(replace(VALID, dataset=folder(tmp_path, "any", 2), profile="huge"))  # no batch to check
    assert set(unknown) == {"profile"}


# --------------------------------------------------------------------------- the command line's numbers


def refuses(parse, text: str) -> str:
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        parse(text)
    return str(raised.value)


def test_a_whole_number_argument_takes_its_range_and_names_it_when_refusing():
    parse = whole(1, 32)
    assert [parse(t) for t in ("1", "32", " 7 ", "+5")] == [1, 32, 7, 5]
    for text in ("0", "33", "-1", "1.5", "1e3", "", "ten", "9" * 20):
        assert "from 1 to 32" in refuses(parse, text), text
    assert whole(0, 2**63 - 1)("9223372036854775807") == 2**63 - 1


def test_a_number_argument_takes_its_range_and_names_it_when_refusing():
    share = number(0, 1, below=True)
    assert [share(t) for t in ("0", "0.25", "0.999")] == [0, 0.25, 0.999]
    for text in ("1", "1.5", "-0.001", "nan", "inf", "-inf", "x"):
        assert "from 0 to below 1" in refuses(share, text), text
    rate = number(0, 10, above=True)
    assert [rate(t) for t in ("1e-9", "10")] == [1e-9, 10]
    for text in ("0", "-1", "10.5"):
        assert "above 0 and at most 10" in refuses(rate, text), text
    closed = number(0, 1)
    assert [closed(t) for t in ("0", "1")] == [0, 1]
    assert "from 0 to 1" in refuses(closed, "1.01")
