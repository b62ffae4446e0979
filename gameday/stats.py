"""The one percentile of the harness: nearest rank, always a value that was measured.

Probe latencies (a sorted list) and locust's response-time histograms (value -> count) use
the same rule, so a p95 in a verdict and a p95 in a baseline mean the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def _rank(count: int, percentile: float) -> int:
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    return max(1, math.ceil(percentile / 100 * count))


def nearest_rank(sorted_values: Sequence[float], percentile: float) -> float:
    """The smallest value with at least `percentile`% of the values at or below it."""
    if not sorted_values:
        raise ValueError("no values")
    return sorted_values[_rank(len(sorted_values), percentile) - 1]


def nearest_rank_of_counts(histogram: Mapping[float, int], percentile: float) -> float:
    """`nearest_rank` of a histogram (value -> how many times it was seen); 0.0 when empty."""
    count = sum(histogram.values())
    if count == 0:
        return 0.0
    needed = _rank(count, percentile)
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= needed:
            return float(value)
    return float(max(histogram))
