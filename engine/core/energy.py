"""Energy per inference from operation counts: plain arithmetic, no torch (the dashboard's energy columns).

``engine.deploy.nir`` counts the operations (``count_ops``); this module turns counts into microjoules.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation (picojoules). Defaults: 45 nm CMOS, 32-bit float (Horowitz, ISSCC 2014), the
    constants SNN papers commonly use: 0.9 pJ per accumulate, 4.6 pJ per multiply-accumulate."""

    pj_per_ac: float = 0.9
    pj_per_mac: float = 4.6

    def snn_uj(self, acs: float, macs: float) -> float:
        return (acs * self.pj_per_ac + macs * self.pj_per_mac) / 1e6

    def ann_uj(self, macs: float) -> float:
        return macs * self.pj_per_mac / 1e6
