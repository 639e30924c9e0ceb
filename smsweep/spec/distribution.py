"""One searched key's distribution in `search.space` (choice, uniform, loguniform, randint, with
an optional `when` condition), as the schema holds it. Sampling and checking a space is space.py's.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

DISTRIBUTION_KEYS = ("choice", "uniform", "loguniform", "randint", "when")
_MAX_ENUMERATED_INTS = 256


class Distribution(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    choice: tuple[Any, ...] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    when: dict[str, tuple[Any, ...]] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [
            name
            for name in ("choice", "uniform", "loguniform", "randint")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"a distribution needs exactly one of choice, uniform, loguniform, randint "
                f"(got {', '.join(given) or 'none'}), e.g. {{uniform: [0.4, 0.75]}}"
            )
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value, e.g. {choice: [random, selective]}")
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"the bounds [{bounds[0]}, {bounds[1]}] need low < high")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs a positive low bound (got {self.loguniform[0]})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("choice", "uniform", "loguniform", "randint") if getattr(self, k))

    @property
    def args(self) -> tuple[Any, ...]:
        return getattr(self, self.kind)

    def values_to_check(self) -> list[Any]:
        """Every value the distribution can produce, or its extremes and midpoint if infinite."""
        if self.choice is not None:
            return list(self.choice)
        low, high = self.args
        if self.randint is not None:
            if high - low < _MAX_ENUMERATED_INTS:
                return list(range(low, high + 1))
            return [low, (low + high) // 2, high]
        if self.loguniform is not None:
            return [low, (low * high) ** 0.5, high]
        return [low, (low + high) / 2, high]
