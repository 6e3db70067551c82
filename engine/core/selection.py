"""Alg. 1 of SpiKernel: the most accurate model that fits a memory budget, and the Pareto front.

Accuracy is judged on validation accuracy (``validation``: images held out of the training set, or a benchmark's
validation split) when every model compared has one, and the chosen model is reported with its test accuracy
(``accuracy``), which choosing on it would make optimistic. Models without one are compared on test accuracy.

A budget is parameters (``"10M"``, ``2500000``) or bytes at a bit width (``"4MB"`` at 8-bit holds four
million parameters). Memory of a model is its Eq. 2-3 parameter count times the bit width
(``engine.core.footprint.weight_bytes``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.core.errors import InputError
from engine.core.footprint import check_bits, weight_bytes

_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}
_BYTES = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_MICROJOULES = {"": 1.0, "uj": 1.0, "µj": 1.0, "nj": 1e-3, "mj": 1e3}
_NUMBER_UNIT = re.compile(r"\s*([-+]?[0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([a-zµ]*)\s*")


def _number_unit(text: str, units=_SUFFIX.keys() | _BYTES.keys()) -> tuple[float, str] | None:
    """``"40MB"`` -> ``(40.0, "mb")``; None when ``text`` is not a number and one of ``units``."""
    m = _NUMBER_UNIT.fullmatch(str(text).lower())
    if not m or m.group(2) not in units:
        return None
    return float(m.group(1)), m.group(2)


def _finite(value: int | float, what: str) -> float:
    """``value`` as a float; a whole number too large for one is refused, not an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        raise InputError(f"{what} must be positive and finite, got a number of {len(str(value))} digits") from None


def budget_in_bytes(text: str) -> bool:
    """Whether a budget's text counts bytes (``"40MB"``, ``"3MiB"``): such a budget takes a bit width."""
    parsed = _number_unit(text)
    return parsed is not None and parsed[1] in _BYTES


class Scored(Protocol):
    accuracy: float  # test accuracy: what is reported
    params: int
    # and optionally ``validation``: the validation accuracy chosen on (None or absent: none)


def _validation(model) -> float | None:
    value = getattr(model, "validation", None)
    return None if value is None or math.isnan(value) else value


def judged_on_validation(models: Sequence[Scored]) -> bool:
    """Whether ``models`` are compared on validation accuracy: every one of them has it."""
    return bool(models) and all(_validation(m) is not None for m in models)


@dataclass(frozen=True)
class Budget:
    """A memory budget: ``limit`` parameters, or ``limit`` bytes when ``bits`` is set."""

    limit: float
    bits: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, (int, float)) or math.isnan(self.limit):
            raise InputError(f"a budget must be a number, got {self.limit!r}")
        if self.limit <= 0 or math.isinf(self.limit):
            raise InputError(f"a budget must be positive and finite, got {self.limit!r}")
        if self.bits is not None:
            check_bits(self.bits)

    def cost(self, params: int) -> float:
        return weight_bytes(params, self.bits) if self.bits else params

    def fits(self, params: int) -> bool:
        return self.cost(params) <= self.limit

    def __str__(self) -> str:
        if self.bits:
            return f"{self.limit / 1e6:g} MB at {self.bits}-bit"
        return f"{self.limit / 1e6:g} M parameters"

    @classmethod
    def parse(cls, text: str | float, bits: int | None = None) -> Budget:
        """``"10M"``, ``"2.5e6"``, ``"500k"`` (parameters) or ``"40MB"``, ``"3MiB"`` (bytes, needs ``bits``;
        32 when not given)."""
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return cls(_finite(text, "a budget"), bits)
        parsed = _number_unit(text)
        if parsed is None:
            raise InputError(f"{text!r} is not a budget: write parameters like '10M' or '500k', or memory like '40MB'")
        value, unit = parsed
        if unit in _BYTES:
            return cls(value * _BYTES[unit], bits or 32)
        if bits is not None:  # '10M' at 8 bits would silently become 10 MB
            raise InputError(f"{text!r} counts parameters; a bit width applies to a budget in bytes, like '40MB'")
        return cls(value * _SUFFIX[unit], bits)


@dataclass(frozen=True)
class Selection:
    chosen: Scored | None
    reason: str


def parse_energy_budget(value: str | float | None) -> float | None:
    """An energy budget in microjoules per inference (``"2.5"``, ``"2.5uJ"``, ``"800nJ"``, ``"0.01mJ"``), or None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        limit = _finite(value, "an energy budget")
    else:
        parsed = _number_unit(value, _MICROJOULES.keys())
        if parsed is None:
            raise InputError(f"{value!r} is not an energy budget: write microjoules per inference like '2.5uJ'")
        limit = parsed[0] * _MICROJOULES[parsed[1]]
    if not (limit > 0 and math.isfinite(limit)):
        raise InputError(f"an energy budget must be positive and finite, got {value!r}")
    return limit


def select_model(models: Iterable[Scored], budget: Budget | str | float, energy: float | None = None) -> Selection:
    """Alg. 1: among models whose memory meets the budget, the most accurate; ties go to fewer parameters.

    Beyond the paper, ``energy`` (microjoules per inference) is a second budget: a model must also have a
    measured energy (``energy_uj``) within it.
    """
    if not isinstance(budget, Budget):
        budget = Budget.parse(budget)
    models = list(models)
    if not models:
        return Selection(None, "there are no trained models yet")
    fitting = [m for m in models if m.accuracy is not None and budget.fits(m.params)]
    if not fitting:
        smallest = min(models, key=lambda m: m.params)
        return Selection(
            None,
            f"nothing fits {budget}: the smallest model needs {budget.cost(smallest.params) / 1e6:.3g} "
            f"{'MB' if budget.bits else 'M parameters'}",
        )
    within = f"within {budget}"
    if energy is not None:
        measured = [m for m in fitting if getattr(m, "energy_uj", None) is not None]
        frugal = [m for m in measured if m.energy_uj <= energy]
        within += f" and {energy:g} µJ per inference"
        if not frugal:
            if not measured:
                why = "none of the models within the memory budget has a measured energy"
            else:
                least = min(m.energy_uj for m in measured)
                why = f"the most frugal model within the memory budget needs {least:.3g} µJ per inference"
            return Selection(None, f"nothing fits {budget} and {energy:g} µJ: {why}")
        fitting = frugal
    # Chosen on validation accuracy, its test accuracy only reported; on test where some model has no validation.
    on_validation = judged_on_validation(fitting)
    chosen = max(fitting, key=lambda m: (m.validation if on_validation else m.accuracy, -m.params))
    if on_validation:
        accurate = "most accurate on validation"
    else:
        lacking = sum(_validation(m) is None for m in fitting)
        accurate = (
            "most accurate on test"
            if lacking == len(fitting)
            else f"most accurate on test ({lacking} of them without a validation accuracy)"
        )
    return Selection(chosen, f"{accurate} of {len(fitting)} of {len(models)} models {within}")


def pareto_front(points: Sequence[Scored]) -> list[Scored]:
    """Models no other beats on both accuracy (higher) and parameters (fewer), by rising parameter count.

    Accuracy is validation accuracy when every model has one (as Alg. 1 judges), else test accuracy. Sort by
    parameters (ties: best accuracy first), then keep each point more accurate than all before it: O(n log n).
    """
    points = [p for p in points if p.accuracy is not None]
    on_validation = judged_on_validation(points)

    def judged(p) -> float:
        return p.validation if on_validation else p.accuracy

    front, best = [], -math.inf
    for p in sorted(points, key=lambda p: (p.params, -judged(p))):
        if judged(p) > best:
            front.append(p)
            best = judged(p)
    return front
