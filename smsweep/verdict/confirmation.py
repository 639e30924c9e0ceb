"""A sweep judged by phase: with search.confirm, the verdict comes from the confirmation runs
(fresh seeds that played no part in choosing), and the search's estimate of the same comparison
is kept beside it: their gap is the winner's curse a sweep without confirmation would report.

The confirmation of one configuration judges it as chosen beforehand (`judge(picked=...)`: no
correction for picking, since these seeds did not pick it); of several, the best of them is
picked again on the confirmation seeds and corrected for picking out of those few.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from smsweep.verdict.arms import Arm
from smsweep.verdict.stats import Comparison, Verdict, judge


@dataclass(frozen=True)
class Judged:
    """What a sweep concludes (`verdict`: the confirmation's when one ran) and, with a
    confirmation, the search phase's verdict on the repeats that chose the best."""

    verdict: Verdict
    search: Verdict | None = None

    @property
    def confirmed(self) -> bool:
        return self.search is not None

    def lines(self) -> list[str]:
        """The search's estimate beside the confirmed one, for the best against each control
        (none without a confirmation)."""
        if self.search is None:
            return []
        best, searched = self.verdict.best, self.search.best
        if best is None:
            return ["The confirmation has no score yet: the verdict above is the search's."]
        n = len(best.values)
        lines = [
            f"Confirmed on {n} fresh seed{'s' * (n != 1)}: {best.name}, chosen by the search "
            + (
                "as its best."
                if searched is not None and searched.key == best.key
                else f"among its top {len(self.verdict.configurations)}."
            )
        ]
        for name, confirmed in self.verdict.best_vs_controls.items():
            before = self.search.vs_controls.get((best.key, name))
            if before is None or before.difference.n == 0:
                continue
            lines.append(_beside(name, before, confirmed))
        return lines

    def mlflow_metrics(self) -> dict[str, float]:
        """The verdict's numbers, and with a confirmation the search's under `search/`."""
        numbers = self.verdict.mlflow_metrics()
        if self.search is not None:
            numbers |= {f"search/{k}": v for k, v in self.search.mlflow_metrics().items()}
        return numbers


def _beside(control: str, before: Comparison, confirmed: Comparison) -> str:
    search, now = before.difference, confirmed.difference
    line = (
        f"vs control {control}: the search's repeats said {100 * search.mean:+.1f} points "
        f"(n={search.n}), the fresh seeds say {100 * now.mean:+.1f} (n={now.n})"
    )
    if now.n == 0 or math.isnan(now.mean):
        return line + "."
    gap = 100 * (search.mean - now.mean)
    if gap > 0:
        return line + f": the search's estimate was {gap:.1f} points high (the winner's curse)."
    return line + f": the search's estimate was {-gap:.1f} points low this time."


def judge_sweep(runs: Sequence[tuple[Arm, float | None]], metric: str, mode: str = "max") -> Judged:
    """Judge a sweep's trials (`runs`: each trial's arm and score): the search phase alone, or
    with confirmation runs the confirmation, the search's verdict beside it."""
    search = [arm.scored(value) for arm, value in runs if not arm.confirming]
    confirming = [(arm, value) for arm, value in runs if arm.confirming]
    if not confirming:
        return Judged(judge(search, metric, mode))
    confirmed = [arm.scored(value) for arm, value in confirming]
    chosen = {arm.key for arm, _ in confirming if arm.control is None}
    picked = next(iter(chosen)) if len(chosen) == 1 else None
    return Judged(judge(confirmed, metric, mode, picked=picked), judge(search, metric, mode))
