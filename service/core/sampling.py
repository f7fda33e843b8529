"""An exact share of a stream of requests: the shadow's (:mod:`service.hosting.traffic`) and the payload
log's (:mod:`service.inference.payload_log`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False)
class Share:
    """Of the calls to :meth:`take`, exactly ``fraction`` say yes, evenly spread (every ``1/fraction``-th)."""

    fraction: float
    _credit: float = 0.0

    def take(self) -> bool:
        self._credit += self.fraction
        if self._credit >= 1.0 - 1e-9:  # sums of tenths fall a hair short of 1
            self._credit -= 1.0
            return True
        return False
