"""Rank groups that do not rank noise: rows whose intervals overlap the group leader's share a rank."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple


class RankedRow(NamedTuple):
    """A row with its shared rank (1 = best group)."""

    rank: int
    name: str
    estimate: float
    low: float
    high: float


def rank_groups(
    rows: Sequence[tuple[str, float, float, float]], lower_is_better: bool = True
) -> list[RankedRow]:
    """Rows ``(name, estimate, low, high)`` sorted best first, with shared ranks.

    Rule: sort by estimate (ascending when ``lower_is_better``, as for penalties; ties keep the input order).
    The first row leads rank group 1. Each following row joins the current group when its interval
    ``[low, high]`` overlaps the leader's (closed intervals: ``low <= leader.high and leader.low <= high``);
    otherwise it leads a new group, whose rank is the previous rank + 1. Overlap is compared with the
    leader only, so a group never spans rows that are clearly separated from its best row. Overlapping
    intervals are a conservative reading (two rows can differ significantly and still overlap slightly); the
    rule is meant to stop ranking differences of an image or two, not to test them.
    """
    for row in rows:
        _check_row(row)
    ordered = sorted(rows, key=lambda row: row[1], reverse=not lower_is_better)
    ranked: list[RankedRow] = []
    leader: tuple[str, float, float, float] | None = None
    rank = 0
    for name, estimate, low, high in ordered:
        if leader is None or not intervals_overlap((low, high), (leader[2], leader[3])):
            leader = (name, estimate, low, high)
            rank += 1
        ranked.append(RankedRow(rank, name, float(estimate), float(low), float(high)))
    return ranked


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether closed intervals ``a = (low, high)`` and ``b`` share a point."""
    return a[0] <= b[1] and b[0] <= a[1]


def distinguishable_from_zero(low: float, high: float) -> bool:
    """Whether the closed interval ``[low, high]`` excludes 0 (a penalty distinguishable from no penalty)."""
    if math.isnan(low) or math.isnan(high) or low > high:
        raise ValueError(f"not an interval: [{low}, {high}]")
    return low > 0.0 or high < 0.0


def _check_row(row: tuple[str, float, float, float]) -> None:
    if len(row) != 4:
        raise ValueError(f"expected rows (name, estimate, low, high), got {row!r}")
    name, estimate, low, high = row
    if any(math.isnan(float(v)) for v in (estimate, low, high)):
        raise ValueError(f"row {name!r}: NaN in (estimate, low, high) = {(estimate, low, high)}")
    if low > high:
        raise ValueError(f"row {name!r}: low {low} > high {high}")
