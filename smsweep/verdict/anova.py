"""Whether a sweep's configurations differ at all: a two-way ANOVA blocked by repeat seed, and
the sentence that says what it found, worded by its power (a p above 0.05 is no evidence of a
difference, not evidence of none)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from smsweep.verdict import power


def anova_sentence(configurations: Sequence[Mapping[int, float]]) -> str | None:
    """A sentence on whether the configurations' means differ by more than seed noise: a
    two-way ANOVA blocked by repeat (the repeats every configuration has; a repeat's seed is
    shared by every arm, so blocking removes what the seeds share, as pairing does). None with
    fewer than two configurations. `configurations`: each one's scores, repeat -> score."""
    if len(configurations) < 2:
        return None
    if max(len(values) for values in configurations) < 2:
        return (
            "Each configuration ran once, so these numbers cannot be told from seed noise "
            "(set search.repeats: 3 or more)."
        )
    common = sorted(set.intersection(*(set(values) for values in configurations)))
    k, b = len(configurations), len(common)
    if b < 2:
        return None
    table = [[values[r] for r in common] for values in configurations]
    grand = statistics.fmean(v for row in table for v in row)
    arm_means = [statistics.fmean(row) for row in table]
    block_means = [statistics.fmean(row[j] for row in table) for j in range(b)]
    between = b * sum((m - grand) ** 2 for m in arm_means)
    blocks = k * sum((m - grand) ** 2 for m in block_means)
    total = sum((v - grand) ** 2 for row in table for v in row)
    error = total - between - blocks
    spread = statistics.pstdev(arm_means)
    if error <= 1e-15 * max(total, 1e-300):
        return None  # no residual noise to compare with (e.g. every run scored the same)
    from scipy.stats import f as f_distribution

    error_df = (k - 1) * (b - 1)
    statistic = (between / (k - 1)) / (error / error_df)
    p_value = float(f_distribution.sf(statistic, k - 1, error_df))
    how = f"ANOVA over {b} repeats blocked by seed, p = {p_value:.3f}"
    if p_value > 0.05:
        # What a pair of configurations could have shown at this noise: the residual mean
        # square is one score's variance, a paired difference has twice it.
        mde = power.minimum_detectable_effect(math.sqrt(2 * error / error_df), b)
        return (
            f"The configurations' means (spread {spread:.3f}) show no evidence of differing "
            f"beyond seed noise at this power ({how}; a pair of configurations would need to "
            f"differ by about {100 * mde:.1f} points to be found 80% of the time): the ranking "
            "and the importances are no evidence of a difference either way."
        )
    return (
        f"The configurations' means (spread {spread:.3f}) differ by more than seed noise ({how})."
    )
