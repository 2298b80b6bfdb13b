"""Significance of A/B differences: the two-proportion z-test (pooled), as used for subject
and content tests by most mail tools, with the usual 5 % level."""

from __future__ import annotations

import math
from dataclasses import dataclass

SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class ZTest:
    """z of rate A minus rate B and its two-sided p-value."""

    z: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE_LEVEL


def two_proportion_z_test(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int
) -> ZTest | None:
    """Test whether successes_a / trials_a and successes_b / trials_b differ by more than
    chance. None when a side has no trials; z = 0, p = 1 when both rates are 0 % or 100 %
    (nothing tells them apart)."""
    if trials_a <= 0 or trials_b <= 0:
        return None
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    if spread == 0:
        return ZTest(z=0.0, p_value=1.0)
    z = (successes_a / trials_a - successes_b / trials_b) / spread
    return ZTest(z=z, p_value=math.erfc(abs(z) / math.sqrt(2)))
