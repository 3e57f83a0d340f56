"""Matching a target aspect ratio to the shapes a model can produce."""

from __future__ import annotations

import math
from collections.abc import Iterable


def parse_ratio(value: str) -> float | None:
    """Width over height of "W:H" or "WxH"; None when it is not a positive ratio."""
    for separator in (":", "x", "X"):
        if separator in value:
            left, _, right = value.partition(separator)
            try:
                width, height = float(left), float(right)
            except ValueError:
                return None
            if width > 0 and height > 0 and math.isfinite(width / height):
                return width / height
            return None
    return None


def nearest(target: str, choices: Iterable[str]) -> str | None:
    """The choice whose ratio is closest to `target` (compared in log space, so 1:2 and 2:1 are
    equally far from 1:1); None when `target` is not a ratio."""
    wanted = parse_ratio(target)
    if wanted is None:
        return None
    best: tuple[float, str] | None = None
    for choice in choices:
        ratio = parse_ratio(choice)
        if ratio is None:
            continue
        distance = abs(math.log(ratio / wanted))
        if best is None or distance < best[0]:
            best = (distance, choice)
    return None if best is None else best[1]
