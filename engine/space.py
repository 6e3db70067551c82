"""The search space: kernel sets, settings, and the SNASNet forward cell (genotype).

A cell has four nodes; node 0 is the cell input and node 3 its output. Six forward edges, in the order
of ``EDGES``, each carry one op code. Ops 2 and 3 are convolutions whose kernel sizes come from the
kernel set, which is what SpiKernel explores.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from functools import cache

import numpy as np

from .seeds import derive_seed


class Op(IntEnum):
    ZERO = 0  # no connection
    SKIP = 1  # identity
    CONV_A = 2  # conv with the kernel set's first (smaller) kernel
    CONV_B = 3  # conv with the kernel set's second (larger) kernel
    AVGPOOL = 4  # 3x3 average pool, stride 1

    @property
    def is_conv(self) -> bool:
        return self in (Op.CONV_A, Op.CONV_B)


EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_NODES = 4
MIN_KERNEL, MAX_KERNEL = 1, 11
MAX_ITERATIONS = 1_000_000  # search iterations of one setting, wherever a setting comes from
MAX_EPOCHS = 10_000  # training epochs of one run
MAX_IN_FLIGHT = 32  # candidates scored at once, one process each: a bound on what one machine is asked to start
MAX_SEED = 2**63 - 1  # seeds are stored as SQLite integers


class SpaceError(ValueError):
    """A kernel set, setting or genotype that is not part of the search space."""


# --------------------------------------------------------------------------------------- kernel sets

KERNEL_SET_RULE = (
    "a kernel set is two distinct odd kernel sizes from 1 to 11, written like '3x3_5x5' (or '3x3,5x5', '3,5')"
)


@dataclass(frozen=True, order=True)
class KernelSet:
    """Two distinct odd square kernel sizes; op 2 uses ``small``, op 3 uses ``large``."""

    small: int
    large: int

    def __post_init__(self) -> None:
        for k in (self.small, self.large):
            if isinstance(k, bool) or not isinstance(k, int) or not MIN_KERNEL <= k <= MAX_KERNEL or k % 2 == 0:
                raise SpaceError(f"kernel size {k!r} is not allowed: {KERNEL_SET_RULE}")
        if self.small >= self.large:
            raise SpaceError(f"kernel sizes must be distinct and ascending, got {self.small} and {self.large}")

    @property
    def name(self) -> str:
        return f"{self.small}x{self.small}_{self.large}x{self.large}"

    def kernel(self, op: Op) -> int:
        if op == Op.CONV_A:
            return self.small
        if op == Op.CONV_B:
            return self.large
        raise SpaceError(f"op {op.name} has no kernel")

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str) -> KernelSet:
        """Parse ``3x3_5x5``, ``3x3,5x5``, ``3x3+5x5`` or ``3,5``; the order of the two does not matter."""
        parts = [p for p in re.split(r"[_,+\s]+", str(text).strip().lower()) if p]
        if len(parts) != 2:
            raise SpaceError(f"{text!r} is not a kernel set: {KERNEL_SET_RULE}")
        sizes = []
        for part in parts:
            m = re.fullmatch(r"(-?\d{1,4})(?:x(-?\d{1,4}))?", part)
            if not m or (m.group(2) is not None and m.group(1) != m.group(2)):
                raise SpaceError(f"{part!r} in {text!r} is not a square kernel size: {KERNEL_SET_RULE}")
            sizes.append(int(m.group(1)))
        if sizes[0] == sizes[1]:
            raise SpaceError(f"{text!r} repeats kernel size {sizes[0]}: {KERNEL_SET_RULE}")
        small, large = sorted(sizes)
        return cls(small, large)


# Table I of the SpiKernel paper.
TABLE_I: tuple[KernelSet, ...] = (
    KernelSet(1, 3),
    KernelSet(1, 5),
    KernelSet(3, 5),
    KernelSet(1, 7),
    KernelSet(3, 7),
    KernelSet(5, 7),
)


@dataclass(frozen=True)
class Setting:
    """A kernel set searched for a number of random-search iterations, named like ``3x3_5x5_1000x``."""

    kernel_set: KernelSet
    iterations: int

    def __post_init__(self) -> None:
        if not isinstance(self.kernel_set, KernelSet):
            raise SpaceError(f"a setting needs a kernel set, got {self.kernel_set!r}")
        if (isinstance(self.iterations, bool) or not isinstance(self.iterations, int)
                or not 1 <= self.iterations <= MAX_ITERATIONS):  # fmt: skip
            raise SpaceError(f"iterations must be a whole number from 1 to {MAX_ITERATIONS:,}, got {self.iterations!r}")

    @property
    def name(self) -> str:
        return f"{self.kernel_set.name}_{self.iterations}x"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str) -> Setting:
        """The one reading of a setting (``3x3_5x5_1000x``), with the same limits wherever it is written."""
        m = re.fullmatch(r"\s*(.+?)_(\d+)x\s*", text) if isinstance(text, str) and len(text) <= 100 else None
        if not m:
            raise SpaceError(f"{str(text)[:100]!r} is not a setting: write a kernel set and iterations like '3x3_5x5_1000x'")
        digits = m.group(2).lstrip("0") or "0"
        if len(digits) > len(str(MAX_ITERATIONS)):
            raise SpaceError(f"iterations must be a whole number from 1 to {MAX_ITERATIONS:,}, got {digits}")
        return cls(KernelSet.parse(m.group(1)), int(digits))


def parse_kernel_sets(text: str) -> list[KernelSet]:
    """A list of kernel sets: ``1x1_3x3,3x3_5x5`` (or separated by ';' or spaces); ``all`` is Table I.

    Every spelling of one set reads as one set, ``3x3,5x5`` and ``3,5`` too: a lone kernel size is not a
    set, so it pairs with the size after it.
    """
    if not isinstance(text, str):
        raise SpaceError(f"kernel sets are text like '1x1_3x3,3x3_5x5', got {type(text).__name__}")
    if text.strip().lower() in ("all", "table1", "table-i"):
        return list(TABLE_I)
    parts = [p for p in re.split(r"[,;\s]+", text.strip()) if p]
    sets, lone = [], None
    for part in parts:
        single = re.fullmatch(r"(\d+)(?:x\1)?", part.lower()) is not None
        if lone is not None:
            if not single:
                raise SpaceError(f"{lone!r} in {text[:100]!r} is a kernel size without its pair: {KERNEL_SET_RULE}")
            sets.append(KernelSet.parse(f"{lone},{part}"))
            lone = None
        elif single:
            lone = part
        else:
            sets.append(KernelSet.parse(part))
    if lone is not None:
        raise SpaceError(f"{lone!r} in {text[:100]!r} is a kernel size without its pair: {KERNEL_SET_RULE}")
    if not sets:
        raise SpaceError(f"{text[:100]!r} names no kernel set: {KERNEL_SET_RULE}")
    return list(dict.fromkeys(sets))


# ------------------------------------------------------------------------------------------ genotype

GENOTYPE_RULE = (
    "a genotype is 4 groups of 4 digits like '0302 0030 0003 0000': row i lists the op from node i to "
    "nodes 0..3 (0 zero, 1 skip, 2 small conv, 3 large conv, 4 avg pool); only the upper triangle may be non-zero"
)


@dataclass(frozen=True)
class Genotype:
    """One cell: the op code of each edge in ``EDGES`` order. Frozen and hashable.

    Text form is SNASNet's connection matrix, e.g. ``0302 0030 0003 0000``. Two genotypes compute the same
    function when their ``canonical()`` forms are equal.
    """

    ops: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(EDGES) or any(not isinstance(o, int) or not 0 <= o <= 4 for o in self.ops):
            raise SpaceError(f"a genotype needs {len(EDGES)} op codes from 0 to 4, got {self.ops!r}")
        object.__setattr__(self, "ops", tuple(int(o) for o in self.ops))

    def op(self, src: int, dst: int) -> Op:
        return Op(self.ops[EDGES.index((src, dst))])

    @property
    def edges(self) -> list[tuple[int, int, Op]]:
        """Edges that carry an op (zeroize left out)."""
        return [(s, d, Op(o)) for (s, d), o in zip(EDGES, self.ops) if o != Op.ZERO]

    @property
    def conv_edges(self) -> int:
        return sum(Op(o).is_conv for o in self.ops)

    def matrix(self) -> np.ndarray:
        m = np.zeros((NUM_NODES, NUM_NODES), dtype=np.int64)
        for (s, d), o in zip(EDGES, self.ops):
            m[s, d] = o
        return m

    def to_str(self) -> str:
        return " ".join("".join(str(v) for v in row) for row in self.matrix())

    __str__ = to_str

    @classmethod
    def from_str(cls, text: str) -> Genotype:
        rows = str(text).split()
        if len(rows) == 1 and len(rows[0]) == 16:
            rows = [rows[0][i : i + 4] for i in range(0, 16, 4)]
        if len(rows) != NUM_NODES or any(not re.fullmatch(r"[0-4]{4}", r) for r in rows):
            raise SpaceError(f"{text!r} is not a genotype: {GENOTYPE_RULE}")
        m = np.array([[int(c) for c in r] for r in rows])
        if np.tril(m).any():
            raise SpaceError(f"{text!r} has a backward or self connection: {GENOTYPE_RULE}")
        return cls(tuple(int(m[s, d]) for s, d in EDGES))

    def pruned(self) -> Genotype:
        """Zero the edges of nodes cut off from the input or the output, as SNASNet does."""
        adj = (self.matrix() > 0).astype(np.int64)
        reach = sum(np.linalg.matrix_power(adj, p) for p in range(1, NUM_NODES + 1)) > 0
        m = self.matrix()
        for node in range(NUM_NODES):
            dead_end = node < NUM_NODES - 1 and not reach[node, NUM_NODES - 1]
            orphan = node > 0 and not reach[0, node]
            if dead_end or orphan:
                m[node, :] = 0
                m[:, node] = 0
        return Genotype(tuple(int(m[s, d]) for s, d in EDGES))

    @property
    def is_valid(self) -> bool:
        """A sampled cell is kept only if, after pruning, the input still feeds the output directly."""
        return self.pruned().op(0, 3) != Op.ZERO

    def canonical(self) -> Genotype:
        """The representative of every cell computing the same function.

        Pruning removes dead edges; when nodes 1 and 2 are not connected they play symmetric roles, so
        the lexicographically smaller of the two labellings is kept.
        """
        g = self.pruned()
        e01, e02, e12, e03, e13, e23 = g.ops
        if e12 == Op.ZERO:
            swapped = Genotype((e02, e01, 0, e03, e23, e13))
            return min(g, swapped, key=lambda x: x.ops)
        return g


def sample_genotype(rng: np.random.Generator) -> Genotype:
    """Draw one valid cell: every edge uniform over the five ops, prune, resample until 0->3 survives."""
    while True:
        g = Genotype(tuple(int(o) for o in rng.integers(0, len(Op), size=len(EDGES)))).pruned()
        if g.op(0, 3) != Op.ZERO:
            return g


def random_cells(seed: int) -> Iterator[Genotype]:
    """The random search's endless stream of sampled cells for ``seed`` (``search.RandomSampler``'s)."""
    rng = np.random.default_rng(derive_seed(seed, 0))
    while True:
        yield sample_genotype(rng)


@cache
def distinct_cells() -> tuple[Genotype, ...]:
    """Every distinct cell once: the ``canonical()`` forms of the 12,500 valid genotypes, 7,012 of them.

    Sorted by their op codes, so the order is fixed; computed once per process.
    """
    ops = itertools.product(range(len(Op)), repeat=len(EDGES))
    cells = {g.canonical() for g in map(Genotype, ops) if g.is_valid}
    return tuple(sorted(cells, key=lambda g: g.ops))


def exhaustive_order(seed: int) -> list[Genotype]:
    """``distinct_cells()`` shuffled by ``numpy.random.default_rng(seed)``: the order in which an exhaustive
    search of this seed scores them, the same on every run, so a slice can be timed and a stop resumed."""
    cells = distinct_cells()
    return [cells[i] for i in np.random.default_rng(seed).permutation(len(cells))]


def extreme_genotypes() -> tuple[Genotype, Genotype]:
    """The cheapest valid cell (a lone skip from input to output) and the costliest (all six edges
    convolving with the larger kernel): every cell's parameter count lies between theirs."""
    return Genotype.from_str("0001 0000 0000 0000"), Genotype.from_str("0333 0033 0003 0000")
