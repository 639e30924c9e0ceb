"""The masking strategies the spec can name: one entry each, the one source of their names and of
what each can do. The schema's legal values, the cross-field rules, the resources and budgets a
trial needs and the spec reference are all read from here; the class is imported only when a
strategy is built (this module imports neither torch nor the project's models).

A new strategy is one module (a `masking.MaskingStrategy` subclass) plus one entry: here for the
package's own, or, for a strategy of your own, in the `MASKING_STRATEGIES` list of a module the
spec names under `plugins` (every process of the sweep imports it and registers its entries before
it reads the rest of the spec).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

OBJECTIVES = ("reconstruction", "contrastive")  # pretrain.objective
REFRESH_MODES = ("batch", "partition")  # masking.refresh, besides auto


@dataclass(frozen=True)
class StrategyEntry:
    """name: as the spec writes it; implementation: the class, or "module:Class" (imported when
    built); summary: one line for the spec reference; needs_model: masks scored from the model
    after the previous partition (once per partition, by the scorer); objectives: the
    pretraining objectives it can mask for; refresh: the masking.refresh modes it allows."""

    name: str
    implementation: Any  # type[MaskingStrategy] | str
    summary: str
    needs_model: bool = False
    objectives: tuple[str, ...] = OBJECTIVES
    refresh: tuple[str, ...] = REFRESH_MODES

    def load(self) -> Any:
        """The strategy's class."""
        if not isinstance(self.implementation, str):
            return self.implementation
        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module), name)


STRATEGIES: dict[str, StrategyEntry] = {}


def register(entry: StrategyEntry) -> StrategyEntry:
    """Add a strategy; registering the same entry again (a module imported twice) is a no-op."""
    known = STRATEGIES.get(entry.name)
    if known is not None and known != entry:
        raise ValueError(f"masking strategy {entry.name!r} is registered already")
    unknown = sorted(set(entry.objectives) - set(OBJECTIVES)) + sorted(
        set(entry.refresh) - set(REFRESH_MODES)
    )
    if unknown:
        raise ValueError(f"strategy {entry.name!r}: unknown objectives or refresh modes {unknown}")
    STRATEGIES[entry.name] = entry
    return entry


def strategy(name: str) -> StrategyEntry:
    if name not in STRATEGIES:
        raise KeyError(f"unknown masking strategy {name!r}; valid strategies: {names()}")
    return STRATEGIES[name]


def names() -> list[str]:
    """In the order they were registered (the built-ins first)."""
    return list(STRATEGIES)


def model_based() -> list[str]:
    """The strategies whose masks are scored from the model, once per partition."""
    return [name for name, entry in STRATEGIES.items() if entry.needs_model]


def for_objective(objective: str) -> list[str]:
    return [name for name, entry in STRATEGIES.items() if objective in entry.objectives]


def import_plugins(modules: list[str] | tuple[str, ...]) -> None:
    """Import the modules a spec names under `plugins` and register the entries of their
    `MASKING_STRATEGIES` lists."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise ValueError(
                f"plugins: module {name!r} cannot be imported ({error}); give a module on the "
                "Python path of every node (e.g. in the job's working_dir), such as "
                "mypackage.strategies"
            ) from None
        entries = getattr(module, "MASKING_STRATEGIES", None)
        if not entries:
            raise ValueError(
                f"plugins: module {name!r} has no MASKING_STRATEGIES list; add one holding a "
                "smsweep.spec.registry.StrategyEntry for each strategy it defines"
            )
        for entry in entries:
            register(entry)


_MASKING = "smsweep.method.masking."
for _entry in (
    StrategyEntry("none", _MASKING + "_none:NoMasking", "no pretraining: fine-tuning from scratch"),
    StrategyEntry("random", _MASKING + "_random:RandomMasking", "uniformly random patches (MAE)"),
    StrategyEntry("block", _MASKING + "_block:BlockMasking", "contiguous blocks (BEiT)"),
    StrategyEntry(
        "selective",
        _MASKING + "_selective:SelectiveMasking",
        "the patches the previous partition's model rebuilds worst (SMIR)",
        needs_model=True,
        objectives=("reconstruction",),
        refresh=("partition",),
    ),
    StrategyEntry(
        "saliency",
        _MASKING + "_saliency:SaliencyMasking",
        "half foreground, half background by saliency (2309.12757)",
        needs_model=True,
        refresh=("partition",),
    ),
    StrategyEntry(
        "saliency_hard",
        _MASKING + "_saliency:HardSaliencyMasking",
        "foreground first by saliency (2309.12757's hard masks)",
        needs_model=True,
        refresh=("partition",),
    ),
    StrategyEntry(
        "mixed", _MASKING + "_mixed:MixedMasking", "one of two (patch size, ratio) a batch (A2MIM)"
    ),
):
    register(_entry)
