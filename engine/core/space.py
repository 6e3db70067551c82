"""Search spaces as data: an op vocabulary per space, the SNASNet forward cell (genotype), settings.

A cell has four nodes; node 0 is the cell input and node 3 its output. Six forward edges, in the order
of ``EDGES``, each carry one op code, and a space says what each code is (``OpSpec``: zero, skip, a
convolution of some kernel size behind a LIF of some threshold, or a 3x3 average pool).

Two families of spaces:

- ``KernelSet``: SpiKernel's. Ops 0 zero, 1 skip, one convolution per kernel size (smallest first), then
  the average pool; ``1x1_3x3`` is SNASNet's own vocabulary. Cells are pruned as SNASNet prunes them, and
  a sampled cell is kept only if its input feeds its output directly.
- ``SPIKENAS``: SpikeNAS-Bench's. Ops 0 zero, 1 skip, and three 3x3 convolutions behind LIFs of threshold
  0.5, 1.0 and 1.5. Its cells are the raw matrices, never pruned: every one of the 5^6 was trained.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from functools import cache, cached_property

import numpy as np

from engine.core.errors import InputError
from engine.core.seeds import SearchStream, derive_seed

EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_NODES = 4
MIN_KERNEL, MAX_KERNEL = 1, 11
MAX_SIZES = 6  # kernel sizes in one set: every odd size from 1 to 11, codes still one digit each
MAX_ITERATIONS = 1_000_000  # search iterations of one setting, wherever a setting comes from
MAX_EPOCHS = 10_000  # training epochs of one run
MAX_IN_FLIGHT = 32  # candidates scored at once, one process each: a bound on what one machine is asked to start
MAX_SEED = 2**63 - 1  # seeds are stored as SQLite integers
DEFAULT_VALIDATION = 0.1  # the share of a training set held out: models are chosen on it, reported on the test split


def validation_error(value) -> str | None:
    """Why ``value`` cannot be the share of the training images held out for validation (None when it can):
    a finite number from 0 (none held out) to below 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"the validation share is a number from 0 to below 1, got {type(value).__name__}"
    if not 0 <= value < 1:  # NaN, infinities and huge whole numbers fail here too, without converting them
        shown = repr(value) if len(repr(value)) <= 20 else f"a number of {len(repr(value))} digits"
        return f"the validation share must be a finite number from 0 (none) to below 1, got {shown}"
    return None


class SpaceError(InputError):
    """A space, setting or genotype that is not part of the search space."""


# ----------------------------------------------------------------------------------------------- ops


class OpKind(Enum):
    ZERO = "zero"  # no connection
    SKIP = "skip"  # identity
    CONV = "conv"  # LIF -> Conv2d(C, C, k, padding k//2, no bias) -> BatchNorm2d
    AVGPOOL = "avg pool"  # 3x3 average pool, stride 1, no neuron


@dataclass(frozen=True)
class OpSpec:
    """What one op code of a space builds: its kind, kernel size, and the threshold of the LIF in front."""

    kind: OpKind
    kernel: int = 0
    threshold: float = 1.0

    @property
    def is_conv(self) -> bool:
        return self.kind is OpKind.CONV

    @property
    def label(self) -> str:
        """``conv 3x3``, ``conv 3x3 @0.5`` (a threshold other than 1), ``avg pool 3x3``, ``skip``, ``zero``."""
        if self.kind is OpKind.CONV:
            return f"conv {self.kernel}x{self.kernel}" + ("" if self.threshold == 1.0 else f" @{self.threshold:g}")
        if self.kind is OpKind.AVGPOOL:
            return f"avg pool {self.kernel}x{self.kernel}"
        return self.kind.value


ZERO, SKIP, AVGPOOL = OpSpec(OpKind.ZERO), OpSpec(OpKind.SKIP), OpSpec(OpKind.AVGPOOL, 3)


# ------------------------------------------------------------------------------------------ genotype


@dataclass(frozen=True)
class Genotype:
    """One cell: the op code of each edge in ``EDGES`` order. Frozen and hashable.

    Text form is SNASNet's connection matrix, e.g. ``0302 0030 0003 0000``. What a code means is the
    space's (``Space.op``); ``Space.genotype`` reads a text and checks its codes against the vocabulary.
    """

    ops: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(EDGES) or any(
            isinstance(o, bool) or not isinstance(o, int | np.integer) or not 0 <= o <= 9 for o in self.ops
        ):
            raise SpaceError(f"a genotype needs {len(EDGES)} op codes from 0 to 9, got {self.ops!r}")
        object.__setattr__(self, "ops", tuple(int(o) for o in self.ops))

    def op(self, src: int, dst: int) -> int:
        return self.ops[EDGES.index((src, dst))]

    @property
    def edges(self) -> list[tuple[int, int, int]]:
        """``(src, dst, code)`` of the edges that carry an op (zero left out)."""
        return [(s, d, o) for (s, d), o in zip(EDGES, self.ops) if o != 0]

    def matrix(self) -> np.ndarray:
        m = np.zeros((NUM_NODES, NUM_NODES), dtype=np.int64)
        for (s, d), o in zip(EDGES, self.ops):
            m[s, d] = o
        return m

    def to_str(self) -> str:
        return " ".join("".join(str(v) for v in row) for row in self.matrix())

    __str__ = to_str

    @classmethod
    def from_str(cls, text: str, rule: str | None = None) -> Genotype:
        """The matrix of a text like ``0302 0030 0003 0000`` (or its 16 digits in one group)."""
        rule = rule or KernelSet(1, 3).genotype_rule
        rows = str(text).split()
        if len(rows) == 1 and len(rows[0]) == 16:
            rows = [rows[0][i : i + 4] for i in range(0, 16, 4)]
        if len(rows) != NUM_NODES or any(not re.fullmatch(r"[0-9]{4}", r) for r in rows):
            raise SpaceError(f"{str(text)[:100]!r} is not a genotype: {rule}")
        m = np.array([[int(c) for c in r] for r in rows])
        if np.tril(m).any():
            raise SpaceError(f"{str(text)[:100]!r} has a backward or self connection: {rule}")
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

    def swapped(self) -> Genotype:
        """Nodes 1 and 2 relabelled: the same network when no edge joins them."""
        e01, e02, e12, e03, e13, e23 = self.ops
        return Genotype((e02, e01, e12, e03, e23, e13))


# -------------------------------------------------------------------------------------------- spaces


class Space:
    """A search space: a name, an op vocabulary, and whether its cells are pruned (SNASNet) or raw.

    Subclasses are frozen dataclasses, so a space is a value: hashable, comparable, and named by its text.
    """

    name: str
    ops: tuple[OpSpec, ...]
    pruned: bool

    def __str__(self) -> str:
        return self.name

    # -- the vocabulary

    def op(self, code: int) -> OpSpec:
        if not 0 <= code < len(self.ops):
            raise SpaceError(f"op code {code} is not in {self.name} (codes 0 to {len(self.ops) - 1})")
        return self.ops[code]

    @property
    def conv_codes(self) -> frozenset[int]:
        return frozenset(i for i, op in enumerate(self.ops) if op.is_conv)

    @property
    def kernels(self) -> tuple[int, ...]:
        """The distinct kernel sizes of its convolutions, ascending."""
        return tuple(sorted({op.kernel for op in self.ops if op.is_conv}))

    @property
    def genotype_rule(self) -> str:
        codes = ", ".join(f"{i} {op.label}" for i, op in enumerate(self.ops))
        return (
            f"a genotype is 4 groups of 4 digits like '0302 0030 0003 0000': row i lists the op from node i "
            f"to nodes 0..3 ({codes}); only the upper triangle may be non-zero"
        )

    def check(self, genotype: Genotype) -> Genotype:
        """``genotype`` when every code is in this space's vocabulary, else ``SpaceError``."""
        bad = [o for o in genotype.ops if o >= len(self.ops)]
        if bad:
            raise SpaceError(f"{genotype} uses op {bad[0]}, which {self.name} does not have: {self.genotype_rule}")
        return genotype

    def genotype(self, text: str) -> Genotype:
        """Read a genotype's text and check it against this space (pruned where the space prunes)."""
        g = self.check(Genotype.from_str(text, self.genotype_rule))
        return g.pruned() if self.pruned else g

    def conv_edges(self, genotype: Genotype) -> int:
        convs = self.conv_codes
        return sum(o in convs for o in genotype.ops)

    # -- cells

    def is_valid(self, genotype: Genotype) -> bool:
        """Whether a drawn cell is kept: pruned spaces keep it only if the input still feeds the output directly."""
        return not self.pruned or genotype.pruned().op(0, 3) != 0

    def canonical(self, genotype: Genotype) -> Genotype:
        """The representative of every cell building the same network.

        Pruned spaces drop dead edges first. When nodes 1 and 2 are not joined they play symmetric roles,
        so the smaller of the two labellings is kept.
        """
        g = genotype.pruned() if self.pruned else genotype
        return min(g, g.swapped(), key=lambda x: x.ops) if g.op(1, 2) == 0 else g

    def sample(self, rng: np.random.Generator) -> Genotype:
        """Draw one cell: every edge uniform over the ops; pruned spaces prune and resample until 0->3 survives."""
        while True:
            g = Genotype(tuple(int(o) for o in rng.integers(0, len(self.ops), size=len(EDGES))))
            if not self.pruned:
                return g
            g = g.pruned()
            if g.op(0, 3) != 0:
                return g

    def random_cells(self, seed: int) -> Iterator[Genotype]:
        """The random search's endless stream of sampled cells for ``seed`` (``search.RandomSampler``'s)."""
        rng = np.random.default_rng(derive_seed(seed, SearchStream.CELLS))
        while True:
            yield self.sample(rng)

    def distinct_cells(self) -> tuple[Genotype, ...]:
        """Every distinct cell once (canonical forms of the valid genotypes), sorted by op codes; cached."""
        return _distinct_cells(self)

    def exhaustive_order(self, seed: int) -> list[Genotype]:
        """``distinct_cells()`` shuffled by ``numpy.random.default_rng(seed)``: the order in which an exhaustive
        search of this seed scores them, the same on every run, so a slice can be timed and a stop resumed."""
        cells = self.distinct_cells()
        return [cells[i] for i in np.random.default_rng(seed).permutation(len(cells))]

    def extremes(self) -> tuple[Genotype, Genotype]:
        """The cheapest cell and the costliest (six edges of its largest convolution): every cell's parameter
        count lies between theirs."""
        largest = max(self.conv_codes, key=lambda c: (self.ops[c].kernel, c))
        cheapest = Genotype((0, 0, 0, 1, 0, 0)) if self.pruned else Genotype((0,) * len(EDGES))
        return cheapest, Genotype((largest,) * len(EDGES))

    @staticmethod
    def parse(text: str) -> Space:
        """A space by its name: ``spikenas``, or a kernel set (``3x3_5x5``, ``1x1_3x3_5x5``, ``3,5``)."""
        if isinstance(text, str) and text.strip().lower() == SPIKENAS.name:
            return SPIKENAS
        return KernelSet.parse(text)


@cache
def _distinct_cells(space: Space) -> tuple[Genotype, ...]:
    cells = {
        space.canonical(g)
        for g in map(Genotype, itertools.product(range(len(space.ops)), repeat=len(EDGES)))
        if space.is_valid(g)
    }
    return tuple(sorted(cells, key=lambda g: g.ops))


# ----------------------------------------------------------------------------------- SpiKernel's sets

KERNEL_SET_RULE = (
    "a kernel set is two or more distinct odd kernel sizes from 1 to 11, written like '3x3_5x5' or '1x1_3x3_5x5' "
    "(or '3x3,5x5', '3,5')"
)


@dataclass(frozen=True, order=True, init=False)
class KernelSet(Space):
    """Distinct odd square kernel sizes, ascending: op 2 convolves with the first, op 3 with the next, ...,
    and the last op is the average pool. ``KernelSet(3, 5)`` is SpiKernel's Set-3."""

    sizes: tuple[int, ...]

    def __init__(self, *sizes: int) -> None:
        for k in sizes:
            if isinstance(k, bool) or not isinstance(k, int) or not MIN_KERNEL <= k <= MAX_KERNEL or k % 2 == 0:
                raise SpaceError(f"kernel size {k!r} is not allowed: {KERNEL_SET_RULE}")
        if not 2 <= len(sizes) <= MAX_SIZES:
            raise SpaceError(f"a kernel set has 2 to {MAX_SIZES} kernel sizes, got {len(sizes)}: {KERNEL_SET_RULE}")
        if any(a >= b for a, b in zip(sizes, sizes[1:])):
            raise SpaceError(f"kernel sizes must be distinct and ascending, got {', '.join(map(str, sizes))}")
        object.__setattr__(self, "sizes", tuple(sizes))

    pruned = True

    @cached_property
    def ops(self) -> tuple[OpSpec, ...]:  # type: ignore[override]
        return (ZERO, SKIP, *(OpSpec(OpKind.CONV, k) for k in self.sizes), AVGPOOL)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "_".join(f"{k}x{k}" for k in self.sizes)

    @property
    def small(self) -> int:
        return self.sizes[0]

    @property
    def large(self) -> int:
        return self.sizes[-1]

    def kernel(self, code: int) -> int:
        op = self.op(code)
        if not op.is_conv:
            raise SpaceError(f"op {code} ({op.label}) has no kernel")
        return op.kernel

    def __repr__(self) -> str:
        return f"KernelSet{self.sizes}"

    @classmethod
    def parse(cls, text: str) -> KernelSet:
        """Parse ``3x3_5x5``, ``3x3,5x5``, ``3x3+5x5``, ``3,5`` or ``1x1_3x3_5x5``; the order does not matter."""
        parts = [p for p in re.split(r"[_,+\s]+", str(text).strip().lower()) if p]
        if not 2 <= len(parts) <= MAX_SIZES:
            raise SpaceError(f"{str(text)[:100]!r} is not a kernel set: {KERNEL_SET_RULE}")
        sizes = []
        for part in parts:
            m = re.fullmatch(r"(-?\d{1,4})(?:x(-?\d{1,4}))?", part)
            if not m or (m.group(2) is not None and m.group(1) != m.group(2)):
                raise SpaceError(f"{part!r} in {str(text)[:100]!r} is not a square kernel size: {KERNEL_SET_RULE}")
            sizes.append(int(m.group(1)))
        repeated = [k for k in set(sizes) if sizes.count(k) > 1]
        if repeated:
            raise SpaceError(f"{str(text)[:100]!r} repeats kernel size {repeated[0]}: {KERNEL_SET_RULE}")
        return cls(*sorted(sizes))


# Table I of the SpiKernel paper.
TABLE_I: tuple[KernelSet, ...] = (
    KernelSet(1, 3),
    KernelSet(1, 5),
    KernelSet(3, 5),
    KernelSet(1, 7),
    KernelSet(3, 7),
    KernelSet(5, 7),
)


# ------------------------------------------------------------------------------------ SpikeNAS-Bench


@dataclass(frozen=True)
class BenchSpace(Space):
    """A benchmark's fixed vocabulary over raw (unpruned) cells."""

    name: str
    ops: tuple[OpSpec, ...]
    pruned: bool = False


# SpikeNAS-Bench (Sun et al., 2025): its codes 2, 3, 4 are one 3x3 convolution behind LIFs of thresholds
# 0.5, 1.0 and 1.5. Every raw matrix was trained, so none is pruned away.
SPIKENAS = BenchSpace(
    "spikenas",
    (ZERO, SKIP, OpSpec(OpKind.CONV, 3, 0.5), OpSpec(OpKind.CONV, 3, 1.0), OpSpec(OpKind.CONV, 3, 1.5)),
)


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Setting:
    """A space searched for a number of random-search iterations, named like ``3x3_5x5_1000x``."""

    kernel_set: Space
    iterations: int

    def __post_init__(self) -> None:
        if not isinstance(self.kernel_set, Space):
            raise SpaceError(f"a setting needs a kernel set or space, got {self.kernel_set!r}")
        if (
            isinstance(self.iterations, bool)
            or not isinstance(self.iterations, int)
            or not 1 <= self.iterations <= MAX_ITERATIONS
        ):
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
            raise SpaceError(
                f"{str(text)[:100]!r} is not a setting: write a kernel set and iterations like '3x3_5x5_1000x'"
            )
        digits = m.group(2).lstrip("0") or "0"
        if len(digits) > len(str(MAX_ITERATIONS)):
            raise SpaceError(f"iterations must be a whole number from 1 to {MAX_ITERATIONS:,}, got {digits}")
        return cls(Space.parse(m.group(1)), int(digits))


def parse_kernel_sets(text: str) -> list[Space]:
    """A list of spaces: ``1x1_3x3,3x3_5x5`` (or separated by ';' or spaces); ``all`` is Table I.

    Every spelling of one set reads as one set, ``3x3,5x5`` and ``3,5`` too: a lone kernel size is not a
    set, so it pairs with the size after it. ``spikenas`` names SpikeNAS-Bench's space.
    """
    if not isinstance(text, str):
        raise SpaceError(f"kernel sets are text like '1x1_3x3,3x3_5x5', got {type(text).__name__}")
    if text.strip().lower() in ("all", "table1", "table-i"):
        return list(TABLE_I)
    parts = [p for p in re.split(r"[,;\s]+", text.strip()) if p]
    sets: list[Space] = []
    lone = None
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
            sets.append(Space.parse(part))
    if lone is not None:
        raise SpaceError(f"{lone!r} in {text[:100]!r} is a kernel size without its pair: {KERNEL_SET_RULE}")
    if not sets:
        raise SpaceError(f"{text[:100]!r} names no kernel set: {KERNEL_SET_RULE}")
    return list(dict.fromkeys(sets))
