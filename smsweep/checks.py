"""Everything checked before a sweep writes anything: spec, search space, names, data, resources.

`check_all` is what `validate` and `run` call first. It reads files but never writes one, so a
failing check leaves no storage directory, no MLflow database and no stray file behind.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smsweep.config import SweepSpec, load_spec
from smsweep.errors import SpecError
from smsweep.resources import check_fits, local_capacity, trial_demand


@dataclass(frozen=True)
class Checked:
    spec: SweepSpec
    source: Any  # the opened data source
    splits: Any  # smsweep.data.splits.Splits
    concurrency: int


def check_all(
    spec_path: Path, overrides: list[str], capacity: tuple[float, float] | None = None
) -> Checked:
    """Validate everything; `capacity` (CPUs, GPUs) defaults to this machine's."""
    spec = load_spec(spec_path, overrides)
    check_names(spec)
    from smsweep.data import open_source
    from smsweep.data.splits import make_splits

    source = open_source(spec.data, seed=spec.seed)
    splits = make_splits(
        source,
        seed=spec.seed,
        partitions=spec.pretrain.partitions,
        val_fraction=spec.data.val_fraction,
        label_fraction=spec.data.label_fraction,
    )
    if capacity is None:
        capacity = local_capacity(need_gpus=trial_demand(spec.resources).gpus > 0)
    concurrency = check_fits(spec, *capacity, where="this machine")
    return Checked(spec=spec, source=source, splits=splits, concurrency=concurrency)


def check_names(spec: SweepSpec) -> None:
    """Names that live in registries outside the spec: the encoder, the losses, weight files."""
    import segmentation_models_pytorch as smp

    from smsweep.losses import LOSSES

    encoders = sorted(smp.encoders.get_encoder_names())
    searched = spec.search.space.get("model.encoder")
    names = [spec.model.encoder, *(searched.choice or () if searched else ())]
    for name in names:
        if name not in encoders:
            near = difflib.get_close_matches(str(name), encoders, n=3)
            raise SpecError(
                f"model.encoder {name!r} is not a segmentation-models-pytorch encoder; "
                f"did you mean {' or '.join(near) if near else 'resnet18'}? "
                "(`python -c 'import segmentation_models_pytorch as smp; "
                "print(smp.encoders.get_encoder_names())'` lists them)"
            )
    weights = spec.model.encoder_weights
    if weights is not None and not Path(weights).is_file():
        raise SpecError(
            f"model.encoder_weights {weights!r} is not a file; give a local weights file "
            "(nothing is downloaded) or leave it empty to start from random weights"
        )
    losses = spec.pretrain.loss
    for name in [losses] if isinstance(losses, str) else list(losses):
        if name not in LOSSES:
            near = difflib.get_close_matches(name, list(LOSSES), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise SpecError(
                f"pretrain.loss {name!r} is not a known loss; {hint}"
                f"valid: {', '.join(sorted(LOSSES))}"
            )


def describe(checked: Checked) -> str:
    spec, splits = checked.spec, checked.splits
    demand = trial_demand(spec.resources)
    space = spec.search.space
    lines = [
        f"ok: sweep {spec.name!r} is valid",
        f"  data: {spec.data.source}, {len(checked.source)} images at {spec.data.image_size}px, "
        f"{len(splits.pretrain_partitions)} pretraining partitions, "
        f"{len(splits.train)} train / {len(splits.val)} val labeled",
        f"  trials: {spec.search.num_samples}, {checked.concurrency} at a time, "
        f"each {demand.breakdown}",
        "  search: "
        + (
            ", ".join(f"{key} ~ {dist.kind}{list(dist.args)}" for key, dist in space.items())
            or "nothing searched"
        ),
    ]
    return "\n".join(lines)
