"""The sweep spec: one typed, frozen model of the sections in `schema` (the method) and
`search_schema` (how the sweep runs), checked between sections by `rules`.

A spec is a YAML file with those sections. Every key is checked: an unknown key names the
nearest valid one, a wrong type or an out-of-range value names the legal range (explain.py).
Reading, overriding and validating a file, with the search space, is in spec.py. Nothing here
imports torch, Ray or MLflow: validating a spec is cheap and has no side effects.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import field_validator, model_validator

from smsweep.spec import registry, rules
from smsweep.spec.explain import flatten
from smsweep.spec.schema import (
    ContrastiveConfig,
    DataConfig,
    FinetuneConfig,
    MaskingConfig,
    MixedConfig,
    ModelConfig,
    MrmConfig,
    PretrainConfig,
    RobustnessConfig,
    Schedule,
    Section,
    documented,
)
from smsweep.spec.search_schema import (
    ControlArm,
    Objective,
    ResourcesConfig,
    SearchConfig,
    TrackingConfig,
)

__all__ = [
    "ContrastiveConfig",
    "ControlArm",
    "DataConfig",
    "FinetuneConfig",
    "MaskingConfig",
    "MixedConfig",
    "ModelConfig",
    "MrmConfig",
    "Objective",
    "PretrainConfig",
    "ResourcesConfig",
    "RobustnessConfig",
    "Schedule",
    "SearchConfig",
    "SweepSpec",
    "TrackingConfig",
]


class SweepSpec(Section):
    name: str = documented(
        "sweep",
        "sweep name: the experiment directory and MLflow experiment",
        min_length=1,
        max_length=100,
    )
    seed: int = documented(
        0, "seeds data, partitions, masks, weights and the sampler", ge=0, le=2**31 - 1
    )
    repeat: int = documented(
        0,
        "which repeat of its configuration a trial is (search.repeats sets it): repeat r > 0 "
        "seeds weights, masks and fine-tuning from (seed, r); data and partitions follow seed",
        ge=0,
        le=99,
    )
    plugins: tuple[str, ...] = documented(
        (),
        "modules that register masking strategies of your own (smsweep.spec.registry), imported by "
        "every process of the sweep before the rest of the spec is read",
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    masking: MaskingConfig = MaskingConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    mrm: MrmConfig = MrmConfig()
    robustness: RobustnessConfig = RobustnessConfig()
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("name")
    @classmethod
    def _name_is_a_directory_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(
                f"name {name!r} must be usable as a directory name: letters, digits, '_', '.', '-'"
            )
        return name

    @model_validator(mode="before")
    @classmethod
    def _plugins_first(cls, raw: Any) -> Any:
        """The strategies a spec names must be registered before `masking` is validated."""
        if isinstance(raw, dict) and raw.get("plugins"):
            plugins = raw["plugins"]
            if not isinstance(plugins, list | tuple) or not all(
                isinstance(m, str) for m in plugins
            ):
                raise ValueError("plugins must be a list of module names, e.g. [mypackage.masks]")
            registry.import_plugins(plugins)
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        for problem in rules.problems(self):
            raise ValueError(problem)
        return self

    def flat(self) -> dict[str, Any]:
        """The spec as dotted keys (`masking.ratio`: 0.5), for tracking params; search omitted."""
        dumped = self.model_dump(mode="json", exclude={"search"})
        return flatten(dumped)

    def tracked(self) -> dict[str, Any]:
        """The MLflow params: `flat()` and `pretrain.source`, self or cross (pretrain.data)."""
        return self.flat() | {"pretrain.source": "self" if self.pretrain.data is None else "cross"}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
