import itertools
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from engine.core.space import (
    DEFAULT_VALIDATION,
    EDGES,
    MAX_EPOCHS,
    MAX_IN_FLIGHT,
    MAX_ITERATIONS,
    MAX_SEED,
    SPIKENAS,
    TABLE_I,
    Genotype,
    KernelSet,
    OpKind,
    Setting,
    Space,
    SpaceError,
    parse_kernel_sets,
    validation_error,
)

SNASNET = KernelSet(1, 3)  # SNASNet's own vocabulary: every two-size set has its cells


def test_table_i_names():
    assert [ks.name for ks in TABLE_I] == ["1x1_3x3", "1x1_5x5", "3x3_5x5", "1x1_7x7", "3x3_7x7", "5x5_7x7"]


@pytest.mark.parametrize("text", ["3x3_5x5", "3x3,5x5", "5x5_3x3", "3,5", " 3x3 + 5x5 ", "3X3_5X5"])
def test_kernel_set_spellings(text):
    assert KernelSet.parse(text) == KernelSet(3, 5)
    assert KernelSet.parse(text).name == "3x3_5x5"


def test_custom_kernel_sets_up_to_eleven():
    assert KernelSet.parse("5x5,9x9").name == "5x5_9x9"
    assert KernelSet.parse("1x1_11x11").kernel(3) == 11


@pytest.mark.parametrize(
    "text",
    [
        "2x2_3x3",
        "0x0_3x3",
        "-1x-1_3x3",
        "3x3_3x3",
        "axb_3x3",
        "1x1_3x3_3x3",
        "3x3",
        "13x13_3x3",
        "3x5_5x5",
        "",
        "1_3_5_7_9_11_13",
    ],
)
def test_bad_kernel_sets_say_what_is_allowed(text):
    with pytest.raises(SpaceError, match="odd|square|repeats|not a kernel set|not allowed|2 to 6"):
        KernelSet.parse(text)


def test_setting_round_trip_and_errors():
    s = Setting.parse("3x3_5x5_1000x")
    assert (s.kernel_set, s.iterations, s.name) == (KernelSet(3, 5), 1000, "3x3_5x5_1000x")
    for bad in ["3x3_5x5", "3x3_5x5_0x", "3x3_5x5_x", "3x3_4x4_10x"]:
        with pytest.raises(SpaceError):
            Setting.parse(bad)


def test_genotype_text_round_trip():
    g = Genotype.from_str("0302 0030 0003 0000")
    assert g.to_str() == "0302 0030 0003 0000"
    assert g.op(0, 1) == 3 and g.op(0, 3) == 2 and g.op(0, 2) == 0
    assert SNASNET.conv_edges(g) == 4 and SNASNET.op(3).kernel == 3 and SNASNET.op(2).kernel == 1
    assert Genotype.from_str("0302003000030000") == g
    assert len({g, Genotype.from_str("0302 0030 0003 0000")}) == 1


@pytest.mark.parametrize(
    "text", ["0302 0030 0003", "0302 0030 0003 00000", "0502 0030 0003 0000", "0302 1030 0003 0000", "abcd", ""]
)
def test_malformed_genotypes_are_rejected(text):
    with pytest.raises(SpaceError, match="genotype"):
        SNASNET.genotype(text)


def test_prune_removes_dead_ends_and_orphans():
    # 0->1->2 leads nowhere (node 2 has no edge to 3): nodes 1 and 2 are cut, the 0->3 skip remains.
    assert Genotype.from_str("0201 0020 0000 0000").pruned().to_str() == "0001 0000 0000 0000"
    # Node 2 is fed by nobody but feeds node 3: it is an orphan.
    assert Genotype.from_str("0001 0000 0003 0000").pruned().to_str() == "0001 0000 0000 0000"
    # Without the 0->3 edge a cell is not valid.
    assert not SNASNET.is_valid(Genotype.from_str("0300 0030 0003 0000"))


def test_canonical_merges_relabelled_parallel_nodes():
    a = Genotype.from_str("0232 0003 0001 0000")  # node 1 via conv-A, node 2 via conv-B, no 1->2 edge
    b = Genotype.from_str("0322 0001 0003 0000")  # the same cell with nodes 1 and 2 swapped
    assert a != b and SNASNET.canonical(a) == SNASNET.canonical(b)
    # With a 1->2 edge the nodes are not interchangeable.
    c = Genotype.from_str("0232 0013 0001 0000")
    d = Genotype.from_str("0322 0011 0003 0000")
    assert SNASNET.canonical(c) != SNASNET.canonical(d)


def test_canonical_is_a_fixed_point_over_the_whole_space():
    all_ops = np.array(np.meshgrid(*[range(5)] * len(EDGES), indexing="ij")).reshape(len(EDGES), -1).T
    raw = [Genotype(tuple(int(o) for o in ops)) for ops in all_ops]
    assert len(raw) == 5**6
    valid = [g.pruned() for g in raw if SNASNET.is_valid(g)]
    canon = {SNASNET.canonical(g) for g in valid}
    assert all(SNASNET.canonical(c) == c and SNASNET.is_valid(c) for c in canon)
    assert len(canon) < len(set(valid)) < len(valid)


def test_sampling_is_seeded_and_valid():
    rng_a, rng_b, rng_c = (np.random.default_rng(s) for s in (7, 7, 8))
    a = [SNASNET.sample(rng_a) for _ in range(300)]
    b = [SNASNET.sample(rng_b) for _ in range(300)]
    c = [SNASNET.sample(rng_c) for _ in range(300)]
    assert a == b and a != c
    assert all(g.op(0, 3) != 0 and g.pruned() == g for g in a)
    # The direct edge is uniform over the four non-zero ops.
    counts = np.bincount([g.op(0, 3) for g in a], minlength=5)
    assert counts[0] == 0 and counts[1:].min() > 40


def test_extreme_genotypes_bound_the_conv_count():
    small, large = SNASNET.extremes()
    assert SNASNET.conv_edges(small) == 0 and SNASNET.conv_edges(large) == 6
    assert SNASNET.is_valid(small) and SNASNET.is_valid(large) and large.ops == (3,) * 6


def test_one_setting_parser_with_one_iteration_cap():
    from engine.core.space import MAX_ITERATIONS, Setting, SpaceError

    assert Setting.parse(f"1x1_3x3_{MAX_ITERATIONS}x").iterations == MAX_ITERATIONS
    for text in (f"1x1_3x3_{MAX_ITERATIONS + 1}x", "1x1_3x3_99999999999x", f"1x1_3x3_{10**29}x", "1x1_3x3_0x"):
        with pytest.raises(SpaceError, match="from 1 to 1,000,000"):
            Setting.parse(text)
    with pytest.raises(SpaceError, match="not a setting"):
        Setting.parse("1x1_3x3_" + "9" * 5000 + "x")
    with pytest.raises(SpaceError, match="from 1 to 1,000,000"):
        Setting(KernelSet(1, 3), MAX_ITERATIONS + 1)
    with pytest.raises(SpaceError, match="not a kernel set|square"):
        KernelSet.parse("9" * 5000 + ",3")


def test_the_space_has_12500_valid_genotypes_and_7012_distinct_cells():
    all_ops = np.array(np.meshgrid(*[range(5)] * len(EDGES), indexing="ij")).reshape(len(EDGES), -1).T
    valid = [g for g in (Genotype(tuple(int(o) for o in ops)) for ops in all_ops) if SNASNET.is_valid(g)]
    assert len(valid) == 12_500
    assert len({SNASNET.canonical(g) for g in valid}) == 7_012
    cells = SNASNET.distinct_cells()
    assert len(cells) == 7_012 and set(cells) == {SNASNET.canonical(g) for g in valid}
    assert all(len(ks.distinct_cells()) == 7_012 for ks in TABLE_I)


def test_distinct_cells_are_canonical_valid_unique_and_in_a_fixed_order():
    cells = SNASNET.distinct_cells()
    assert isinstance(cells, tuple) and SNASNET.distinct_cells() is cells  # computed once
    assert len(set(cells)) == len(cells)
    assert all(SNASNET.is_valid(c) and SNASNET.canonical(c) == c and c.pruned() == c for c in cells)
    assert [c.ops for c in cells] == sorted(c.ops for c in cells)
    assert set(SNASNET.extremes()) <= set(cells)


def test_exhaustive_order_is_a_seeded_permutation():
    cells = SNASNET.distinct_cells()
    a, b, c = SNASNET.exhaustive_order(7), SNASNET.exhaustive_order(7), SNASNET.exhaustive_order(8)
    assert sorted(a, key=lambda g: g.ops) == list(cells)  # every cell exactly once
    assert a == b and a != c and a != list(cells)
    assert a[:3] == [cells[i] for i in np.random.default_rng(7).permutation(len(cells))[:3]]
    assert SNASNET.exhaustive_order(2**63 - 1) != SNASNET.exhaustive_order(0)  # the largest seed a search takes


def test_a_kernel_set_of_three_sizes_has_one_conv_op_per_size_then_the_pool():
    ks = KernelSet.parse("5x5,1x1_3x3")
    assert ks == KernelSet(1, 3, 5) and ks.name == "1x1_3x3_5x5" and Space.parse(ks.name) == ks
    assert [op.label for op in ks.ops] == ["zero", "skip", "conv 1x1", "conv 3x3", "conv 5x5", "avg pool 3x3"]
    assert Setting.parse("1x1_3x3_5x5_1000x").kernel_set == ks
    assert parse_kernel_sets("1x1_3x3_5x5,3,5") == [ks, KernelSet(3, 5)]
    g = ks.genotype("0405 0054 0003 0000")  # codes up to 5: the pool is 5 here
    assert ks.conv_edges(g) == 3 and ks.op(5).kind is OpKind.AVGPOOL
    with pytest.raises(SpaceError, match="op 6"):
        ks.genotype("0605 0054 0003 0000")
    assert SNASNET.genotype("0403 0030 0002 0000").ops == (4, 0, 3, 3, 0, 2)
    with pytest.raises(SpaceError, match="op 5"):
        SNASNET.genotype("0503 0030 0002 0000")
    # 6^6 raw matrices; pruned and relabelled as for two sizes, every cell once
    cells = ks.distinct_cells()
    assert len(cells) == len(set(cells)) and all(ks.canonical(c) == c and ks.is_valid(c) for c in cells)
    assert len(cells) > 7_012 and ks.extremes()[1].ops == (4,) * 6


def test_spikenas_space_is_raw_cells_of_three_thresholds():
    assert Space.parse(" SpikeNAS ") is SPIKENAS and Setting.parse("spikenas_5000x").kernel_set is SPIKENAS
    assert [(op.kind, op.kernel, op.threshold) for op in SPIKENAS.ops[2:]] == [
        (OpKind.CONV, 3, t) for t in (0.5, 1.0, 1.5)
    ]
    # never pruned: a dead-end conv edge stays, and a cell without 0->3 is a cell
    g = SPIKENAS.genotype("0200 0000 0000 0000")
    assert g.ops == (2, 0, 0, 0, 0, 0) and SPIKENAS.is_valid(g) and SPIKENAS.conv_edges(g) == 1
    rng = np.random.default_rng(0)
    drawn = [SPIKENAS.sample(rng) for _ in range(2000)]
    assert any(d.op(0, 3) == 0 for d in drawn) and any(d != d.pruned() for d in drawn)
    # distinct cells: the 5^6 raw matrices, less the relabellings of nodes 1 and 2 when they are not joined
    unjoined = 5**5  # e12 = 0
    symmetric = 5**3  # and e01 = e02, e13 = e23
    assert len(SPIKENAS.distinct_cells()) == 5**6 - (unjoined - symmetric) // 2
    assert SPIKENAS.extremes() == (Genotype((0,) * 6), Genotype((4,) * 6))


def test_the_validation_share_is_a_finite_number_from_zero_to_below_one():
    for share in (0, 0.0, 0.1, 0.999, DEFAULT_VALIDATION):
        assert validation_error(share) is None, share
    for share in (1, 1.0, 1.5, -0.01, float("nan"), float("inf"), -float("inf")):
        assert "from 0 (none) to below 1" in validation_error(share), share
    for share in (True, "0.1", None, [0.1]):
        assert "is a number from 0 to below 1" in validation_error(share), share
    assert validation_error(10**19).endswith("got 10000000000000000000")  # a huge number is not printed whole
    assert validation_error(10**20).endswith("got a number of 21 digits")


def test_the_limits_are_the_ones_the_readme_promises():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"iterations up to {MAX_ITERATIONS:,}" in readme
    assert f"epochs up to {MAX_EPOCHS:,}; candidates in flight up to {MAX_IN_FLIGHT};" in readme
    assert f"default {DEFAULT_VALIDATION:g}, 0 for none" in readme


def test_the_largest_seed_is_the_largest_sqlite_integer():
    db = sqlite3.connect(":memory:")
    assert db.execute("SELECT ?", (MAX_SEED,)).fetchone() == (MAX_SEED,)
    with pytest.raises(OverflowError):
        db.execute("SELECT ?", (MAX_SEED + 1,))
    db.close()


def test_a_genotype_is_six_op_codes_from_0_to_9():
    assert Genotype((9,) * 6).ops == (9,) * 6
    assert Genotype(tuple(np.int64(o) for o in (0, 0, 0, 1, 0, 0))).ops == (0, 0, 0, 1, 0, 0)
    for ops in (
        (1, 2, 3),
        (0,) * 7,
        (0, 0, 0, 1, 0, 10),
        (0, 0, 0, 1, 0, -1),
        (0, 0, 0, True, 0, 0),
        (0, 0, 0, 1.0, 0, 0),
    ):
        with pytest.raises(SpaceError, match="6 op codes from 0 to 9"):
            Genotype(ops)
    assert Genotype.from_str("0302 0030 0003 0000").edges == [(0, 1, 3), (1, 2, 3), (0, 3, 2), (2, 3, 3)]
    with pytest.raises(SpaceError, match="4 groups of 4 digits"):  # the rule is said without a space too
        Genotype.from_str("abcd")


def test_op_codes_kernels_and_labels():
    assert SNASNET.op(0).kind is OpKind.ZERO and SNASNET.op(4).kind is OpKind.AVGPOOL
    for code in (-1, 5):
        with pytest.raises(SpaceError, match="codes 0 to 4"):
            SNASNET.op(code)
    assert (SNASNET.kernels, SNASNET.conv_codes) == ((1, 3), {2, 3})
    assert (SPIKENAS.kernels, SPIKENAS.conv_codes) == ((3,), {2, 3, 4})
    assert (KernelSet(3, 7, 11).small, KernelSet(3, 7, 11).large) == (3, 11)
    for code in (0, 1, 4):
        with pytest.raises(SpaceError, match="has no kernel"):
            SNASNET.kernel(code)
    assert [op.label for op in SPIKENAS.ops] == ["zero", "skip", "conv 3x3 @0.5", "conv 3x3", "conv 3x3 @1.5"]
    assert str(SNASNET) == "1x1_3x3" and repr(SNASNET) == "KernelSet(1, 3)"


def test_a_kernel_set_has_two_to_six_distinct_odd_sizes_from_1_to_11():
    assert KernelSet(1, 3, 5, 7, 9, 11).sizes == (1, 3, 5, 7, 9, 11)
    assert KernelSet.parse("11,9,7,5,3,1") == KernelSet(1, 3, 5, 7, 9, 11)
    for sizes in ((3,), (3, 3), (5, 3), (0, 3), (3, 13), (2, 3), (True, 3), (3.0, 5), ()):
        with pytest.raises(SpaceError):
            KernelSet(*sizes)


def test_settings_take_one_to_a_million_iterations():
    assert Setting(SNASNET, 1).name == "1x1_3x3_1x" and str(Setting(SNASNET, 1)) == "1x1_3x3_1x"
    for iterations in (0, True, 1.0, MAX_ITERATIONS + 1):
        with pytest.raises(SpaceError, match="from 1 to 1,000,000"):
            Setting(SNASNET, iterations)
    with pytest.raises(SpaceError, match="kernel set or space"):
        Setting("1x1_3x3", 10)
    assert Setting.parse("1x1_3x3_0001000x").iterations == 1000
    longest = "1x1_3x3_" + "0" * 90 + "5x"  # 100 characters: the longest text read as a setting
    assert len(longest) == 100 and Setting.parse(longest).iterations == 5
    with pytest.raises(SpaceError, match="not a setting"):
        Setting.parse("1x1_3x3_0" + "0" * 90 + "5x")


def test_lists_of_kernel_sets():
    assert parse_kernel_sets("all") == parse_kernel_sets(" Table-I ") == list(TABLE_I)
    both = [SNASNET, KernelSet(3, 5)]
    assert parse_kernel_sets("1x1_3x3,3x3_5x5") == parse_kernel_sets("1,3; 3 5") == both
    assert parse_kernel_sets("1x1_3x3 spikenas 1,3") == [SNASNET, SPIKENAS]  # each set once, in order
    for bad, message in (("3", "without its pair"), ("3,1x1_3x3", "without its pair"), (" ,; ", "names no kernel set")):
        with pytest.raises(SpaceError, match=message):
            parse_kernel_sets(bad)
    with pytest.raises(SpaceError, match="are text"):
        parse_kernel_sets(["1x1_3x3"])
    assert Space.parse("3x3_5x5") == KernelSet(3, 5)


def test_the_cheapest_cell_is_a_lone_connection_from_input_to_output():
    assert SNASNET.extremes()[0] == Genotype.from_str("0001 0000 0000 0000")
    assert SPIKENAS.extremes()[0] == Genotype((0,) * 6)  # raw cells: the empty one is a cell


def test_a_chain_of_three_edges_is_connected_and_kept_whole():
    chain = Genotype.from_str("0100 0010 0001 0000")  # 0 -> 1 -> 2 -> 3, no direct edge
    assert chain.pruned() == chain and not SNASNET.is_valid(chain)


def test_the_random_search_stream_is_endless_seeded_and_valid():
    def first(seed: int, n: int = 50) -> list[Genotype]:
        return list(itertools.islice(SNASNET.random_cells(seed), n))

    a = first(3)
    assert len(a) == 50 and a == first(3) and a != first(4)
    assert all(SNASNET.is_valid(g) and g.pruned() == g for g in a)
