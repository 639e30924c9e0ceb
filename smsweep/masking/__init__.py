"""Masking strategies, fills, the selective scorer and mask diagnostics.

Every strategy turns images (and, where it needs one, the model) into per-patch scores; the mask
is the top round(ratio * N) patches, returned as a `PatchMask`. `STRATEGIES` maps the names used
in sweep specs to classes; inside the library pass strategy objects, not names.
"""

import inspect

from smsweep.errors import SpecError
from smsweep.masking._block import BlockMasking
from smsweep.masking._mixed import MixedMasking
from smsweep.masking._none import NoMasking
from smsweep.masking._random import RandomMasking
from smsweep.masking._saliency import HardSaliencyMasking, SaliencyMasking, foreground_fraction
from smsweep.masking._selective import SelectiveMasking
from smsweep.masking.base import (
    MaskingStrategy,
    PatchMask,
    mask_count,
    patch_grid,
    random_tie_keys,
    top_k_mask,
    upsample_mask,
)
from smsweep.masking.diagnostics import mask_diagnostics
from smsweep.masking.fills import FILLS, Fill, build_fill
from smsweep.masking.scorer import patch_loss_scores, sample_masks

STRATEGIES: dict[str, type[MaskingStrategy]] = {
    cls.name: cls
    for cls in (
        NoMasking,
        RandomMasking,
        BlockMasking,
        SelectiveMasking,
        SaliencyMasking,
        HardSaliencyMasking,
        MixedMasking,
    )
}


def build_strategy(name: str, **kwargs: object) -> MaskingStrategy:
    """The strategy registered as `name` (the YAML boundary); kwargs go to its constructor."""
    if name not in STRATEGIES:
        raise SpecError(
            f"unknown masking strategy {name!r}; valid strategies: {sorted(STRATEGIES)}"
        )
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
