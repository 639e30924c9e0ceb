"""Masking strategies, fills, the selective scorer and mask diagnostics.

Every strategy turns images (and, where it needs one, the model) into per-patch scores; the mask
is the top round(ratio * N) patches, returned as a `PatchMask`. `STRATEGIES` maps the names used
in sweep specs (`smsweep.spec.registry`) to classes; inside the library pass strategy objects, not
names.
"""

import inspect
from collections.abc import Iterator, Mapping

from smsweep.errors import SpecError
from smsweep.method.masking._block import BlockMasking
from smsweep.method.masking._mixed import MixedMasking
from smsweep.method.masking._none import NoMasking
from smsweep.method.masking._random import RandomMasking
from smsweep.method.masking._saliency import (
    HardSaliencyMasking,
    SaliencyMasking,
    foreground_fraction,
)
from smsweep.method.masking._selective import SelectiveMasking
from smsweep.method.masking.base import (
    MaskingStrategy,
    PatchMask,
    mask_count,
    patch_grid,
    random_tie_keys,
    top_k_mask,
    upsample_mask,
)
from smsweep.method.masking.diagnostics import mask_diagnostics
from smsweep.method.masking.fills import FILLS, Fill, build_fill
from smsweep.method.masking.scorer import patch_loss_scores, sample_masks
from smsweep.spec import registry


class _Classes(Mapping):
    """Name -> strategy class, read from `smsweep.spec.registry` at each use (so a strategy
    registered by a plugin is here too)."""

    def __getitem__(self, name: str) -> type[MaskingStrategy]:
        if name not in registry.STRATEGIES:
            raise KeyError(name)
        return registry.STRATEGIES[name].load()

    def __iter__(self) -> Iterator[str]:
        return iter(registry.names())

    def __len__(self) -> int:
        return len(registry.STRATEGIES)


STRATEGIES: Mapping[str, type[MaskingStrategy]] = _Classes()


def build_strategy(name: str, **kwargs: object) -> MaskingStrategy:
    """The strategy registered as `name` (the YAML boundary); kwargs go to its constructor."""
    if name not in registry.STRATEGIES:
        raise SpecError(f"unknown masking strategy {name!r}; valid strategies: {registry.names()}")
    cls = STRATEGIES[name]
    valid = sorted(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise SpecError(
            f"unknown parameters {unknown} for masking strategy {name!r}; valid: {valid}"
        )
    return cls(**kwargs)


__all__ = [
    "FILLS",
    "STRATEGIES",
    "BlockMasking",
    "Fill",
    "HardSaliencyMasking",
    "MaskingStrategy",
    "MixedMasking",
    "NoMasking",
    "PatchMask",
    "RandomMasking",
    "SaliencyMasking",
    "SelectiveMasking",
    "build_fill",
    "build_strategy",
    "foreground_fraction",
    "mask_count",
    "mask_diagnostics",
    "patch_grid",
    "patch_loss_scores",
    "random_tie_keys",
    "sample_masks",
    "top_k_mask",
    "upsample_mask",
]
