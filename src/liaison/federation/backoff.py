"""Reconnect delays for partner links (and any other dialler that retries)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: ``base * 2**(failures-1)`` capped at ``cap``, minus up to ``jitter``
    of it at random (DESIGN.md convention 11). Pure given its random source."""

    base: float
    cap: float
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        # Exponent bounded so a long outage cannot overflow the float.
        raw = min(self.cap, self.base * 2.0 ** min(failures - 1, 62))
        return raw * (1.0 - self.jitter * self.rng.random())
