"""Summary statistics of a cell over seeds: mean, sample std and the 95 % Student-t interval of the
mean (used by the report's tables and by the figures)."""
from __future__ import annotations

import math

_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(df: int) -> float:
    """Two-sided 95 % Student t quantile (table; the next smaller tabulated df is used)."""
    if df <= 0:
        return math.nan
    if df > 30:
        return 1.96
    return _T95[max(k for k in _T95 if k <= df)]


def summarize(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    half = t95(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


