import numpy as np
import pytest

from engine.space import (
    EDGES,
    TABLE_I,
    Genotype,
    KernelSet,
    Op,
    Setting,
    SpaceError,
    distinct_cells,
    exhaustive_order,
    extreme_genotypes,
    sample_genotype,
)


def test_table_i_names():
    assert [ks.name for ks in TABLE_I] == ["1x1_3x3", "1x1_5x5", "3x3_5x5", "1x1_7x7", "3x3_7x7", "5x5_7x7"]


@pytest.mark.parametrize("text", ["3x3_5x5", "3x3,5x5", "5x5_3x3", "3,5", " 3x3 + 5x5 ", "3X3_5X5"])
def test_kernel_set_spellings(text):
    assert KernelSet.parse(text) == KernelSet(3, 5)
    assert KernelSet.parse(text).name == "3x3_5x5"


def test_custom_kernel_sets_up_to_eleven():
    assert KernelSet.parse("5x5,9x9").name == "5x5_9x9"
    assert KernelSet.parse("1x1_11x11").kernel(Op.CONV_B) == 11


@pytest.mark.parametrize(
    "text",
    ["2x2_3x3", "0x0_3x3", "-1x-1_3x3", "3x3_3x3", "axb_3x3", "1x1_3x3_5x5", "3x3", "13x13_3x3", "3x5_5x5", ""],
)
def test_bad_kernel_sets_say_what_is_allowed(text):
    with pytest.raises(SpaceError, match="odd|square|repeats|not a kernel set|not allowed"):
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
    assert g.op(0, 1) == Op.CONV_B and g.op(0, 3) == Op.CONV_A and g.op(0, 2) == Op.ZERO
    assert g.conv_edges == 4
    assert Genotype.from_str("0302003000030000") == g
    assert len({g, Genotype.from_str("0302 0030 0003 0000")}) == 1


@pytest.mark.parametrize(
    "text", ["0302 0030 0003", "0302 0030 0003 00000", "0502 0030 0003 0000", "0302 1030 0003 0000", "abcd", ""]
)
def test_malformed_genotypes_are_rejected(text):
    with pytest.raises(SpaceError, match="genotype"):
        Genotype.from_str(text)


def test_prune_removes_dead_ends_and_orphans():
    # 0->1->2 leads nowhere (node 2 has no edge to 3): nodes 1 and 2 are cut, the 0->3 skip remains.
    assert Genotype.from_str("0201 0020 0000 0000").pruned().to_str() == "0001 0000 0000 0000"
    # Node 2 is fed by nobody but feeds node 3: it is an orphan.
    assert Genotype.from_str("0001 0000 0003 0000").pruned().to_str() == "0001 0000 0000 0000"
    # Without the 0->3 edge a cell is not valid.
    assert not Genotype.from_str("0300 0030 0003 0000").is_valid


def test_canonical_merges_relabelled_parallel_nodes():
    a = Genotype.from_str("0232 0003 0001 0000")  # node 1 via conv-A, node 2 via conv-B, no 1->2 edge
    b = Genotype.from_str("0322 0001 0003 0000")  # the same cell with nodes 1 and 2 swapped
    assert a != b and a.canonical() == b.canonical()
    # With a 1->2 edge the nodes are not interchangeable.
    c = Genotype.from_str("0232 0013 0001 0000")
    d = Genotype.from_str("0322 0011 0003 0000")
    assert c.canonical() != d.canonical()


def test_canonical_is_a_fixed_point_over_the_whole_space():
    all_ops = np.array(np.meshgrid(*[range(5)] * len(EDGES), indexing="ij")).reshape(len(EDGES), -1).T
    raw = [Genotype(tuple(int(o) for o in ops)) for ops in all_ops]
    assert len(raw) == 5**6
    valid = [g.pruned() for g in raw if g.is_valid]
    canon = {g.canonical() for g in valid}
    assert all(c.canonical() == c and c.is_valid for c in canon)
    assert len(canon) < len(set(valid)) < len(valid)


def test_sampling_is_seeded_and_valid():
    rng_a, rng_b, rng_c = (np.random.default_rng(s) for s in (7, 7, 8))
    a = [sample_genotype(rng_a) for _ in range(300)]
    b = [sample_genotype(rng_b) for _ in range(300)]
    c = [sample_genotype(rng_c) for _ in range(300)]
    assert a == b and a != c
    assert all(g.op(0, 3) != Op.ZERO and g.pruned() == g for g in a)
    # The direct edge is uniform over the four non-zero ops.
    counts = np.bincount([g.op(0, 3) for g in a], minlength=5)
    assert counts[0] == 0 and counts[1:].min() > 40


def test_extreme_genotypes_bound_the_conv_count():
    small, large = extreme_genotypes()
    assert small.conv_edges == 0 and large.conv_edges == 6 and small.is_valid and large.is_valid


def test_one_setting_parser_with_one_iteration_cap():
    from engine.space import MAX_ITERATIONS, Setting, SpaceError

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
    valid = [g for g in (Genotype(tuple(int(o) for o in ops)) for ops in all_ops) if g.is_valid]
    assert len(valid) == 12_500
    assert len({g.canonical() for g in valid}) == 7_012
    cells = distinct_cells()
    assert len(cells) == 7_012 and set(cells) == {g.canonical() for g in valid}


def test_distinct_cells_are_canonical_valid_unique_and_in_a_fixed_order():
    cells = distinct_cells()
    assert isinstance(cells, tuple) and distinct_cells() is cells  # computed once
    assert len(set(cells)) == len(cells)
    assert all(c.is_valid and c.canonical() == c and c.pruned() == c for c in cells)
    assert [c.ops for c in cells] == sorted(c.ops for c in cells)
    assert set(extreme_genotypes()) <= set(cells)


def test_exhaustive_order_is_a_seeded_permutation():
    cells = distinct_cells()
    a, b, c = exhaustive_order(7), exhaustive_order(7), exhaustive_order(8)
    assert sorted(a, key=lambda g: g.ops) == list(cells)  # every cell exactly once
    assert a == b and a != c and a != list(cells)
    assert a[:3] == [cells[i] for i in np.random.default_rng(7).permutation(len(cells))[:3]]
    assert exhaustive_order(2**63 - 1) != exhaustive_order(0)  # the largest seed a search takes
