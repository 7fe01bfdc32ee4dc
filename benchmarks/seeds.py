"""The summary of one figure over model seeds that every benchmark's --seeds N prints: mean and
spread (max - min), since with three seeds a standard deviation says little more than the range."""

from __future__ import annotations

from statistics import fmean


def summary(values: list[float]) -> dict:
    """{"mean", "spread", "each"} of `values`, rounded to four places."""
    values = [float(v) for v in values]
    return {"mean": round(fmean(values), 4), "spread": round(max(values) - min(values), 4),
            "each": [round(v, 4) for v in values]}
