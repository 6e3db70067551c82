"""The arithmetic of scoring and training: fp32, or bf16 autocast (a faster opt-in on GPUs)."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from engine.core.errors import InputError

if TYPE_CHECKING:
    import torch


class Precision(StrEnum):
    """Stored and shown as its text (``"fp32"``, ``"bf16"``); compares equal to it."""

    FP32 = "fp32"
    BF16 = "bf16"

    @classmethod
    def parse(cls, value: object, what: str = "precision") -> Precision:
        """``value`` as a precision, or an error naming ``what`` was given."""
        try:
            return cls(value)
        except ValueError:
            raise InputError(f"{what} must be fp32 or bf16, got {value!r}") from None

    def autocast(self, device: torch.device | str):
        """The context that runs a forward pass at this precision on ``device`` (a no-op for fp32)."""
        import torch  # here: the dashboard reads and validates precisions without torch

        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=self is Precision.BF16)


PRECISIONS = tuple(p.value for p in Precision)
