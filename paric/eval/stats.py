"""Confidence intervals over training seeds, and paired differences between methods.

Why: a methods table of mean ± std over three seeds could not tell a tie from a gain (vanilla's
worst-group seeds were 0 / 81.3 / 0). Runs of two methods that share a seed share the data order,
the backbone and the initialisation of the head, so their difference seed by seed is the quantity
with the least noise; its CI says whether one method beats the other on this benchmark.

The intervals are scipy's percentile bootstrap of the mean (seeded, so a report is reproducible).
With 5 seeds a bootstrap interval is narrower than a t-interval; both are reported per entry so a
reader can take the conservative one.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: resamples of the bootstrap; the seed makes every report's intervals repeatable
N_RESAMPLES = 9999
SEED = 0


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict:
    """{"mean", "lo", "hi", "t_lo", "t_hi", "n"}: the percentile bootstrap CI of the mean and the
    Student-t CI beside it; a single value (or identical values) gives a zero-width interval."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "t_lo": float("nan"),
                "t_hi": float("nan"), "n": 0}
    mean = float(v.mean())
    if len(v) == 1 or np.ptp(v) == 0:
        return {"mean": mean, "lo": mean, "hi": mean, "t_lo": mean, "t_hi": mean, "n": int(len(v))}
    from scipy import stats  # here, not at import: 0.5 s of every worker that imports the final runs' stage

    res = stats.bootstrap((v,), np.mean, confidence_level=level, n_resamples=N_RESAMPLES, method="percentile",
                          rng=np.random.default_rng(SEED))
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return {"mean": mean, "lo": float(res.confidence_interval.low), "hi": float(res.confidence_interval.high),
            "t_lo": mean - half, "t_hi": mean + half, "n": int(len(v))}


def paired_difference(a: Sequence[float], b: Sequence[float], seeds_a: Sequence[int], seeds_b: Sequence[int],
                      level: float = 0.95) -> dict | None:
    """a − b over the seeds both were run with: the per-seed differences and the CI of their mean
    (``mean_ci``); ``wins`` counts seeds where a > b. None when they share fewer than two seeds."""
    by_b = dict(zip(seeds_b, b))
    pairs = [(s, x, by_b[s]) for s, x in zip(seeds_a, a) if s in by_b and x is not None and by_b[s] is not None]
    if len(pairs) < 2:
        return None
    diffs = [x - y for _, x, y in pairs]
    return {"seeds": [s for s, _, _ in pairs], "diffs": diffs, "wins": int(sum(d > 0 for d in diffs)),
            **mean_ci(diffs, level)}


def paired_differences(table: dict, before: str, pairs: list[list[str]] | list[tuple[str, str]],
                       metrics: tuple[str, ...] = ("worst_group_acc", "mean_group_acc")) -> list[dict]:
    """Every method − ``before`` and each configured pair a − b, seed by seed, with the CI of the mean
    difference; pairs naming a method not in the table are left out."""
    wanted = [(m, before) for m in table if m != before] + [(a, b) for a, b in pairs if b != before]
    out = []
    for a, b in dict.fromkeys(wanted):
        if a not in table or b not in table:
            continue
        entry = {"a": a, "b": b}
        for metric in metrics:
            ea, eb = table[a].get(metric), table[b].get(metric)
            if ea and eb:
                d = paired_difference(ea["runs"], eb["runs"], ea["seeds"], eb["seeds"])
                if d is not None:
                    entry[metric] = d
        if len(entry) > 2:
            out.append(entry)
    return out
