"""The spec's vocabulary: fills, data sources, tracking schemes (the masking strategies are
`smsweep.spec.registry`'s). Shared by the schema
(config.py), its cross-field rules (rules.py), the search space and the builders; it imports
nothing of the project."""

from __future__ import annotations

from typing import Literal

FILLS = ("mean", "zero", "noise", "blur", "highpass", "token")
SOURCES = ("synthetic", "textures", "folder", "voc", "cityscapes")
GENERATED_SOURCES = ("synthetic", "textures")  # made from the seed: no path, `num_images` counts
FIXED_NUM_CLASSES = {"voc": 21, "cityscapes": 19}
GENERATED_CLASSES = {"synthetic": (3, 8), "textures": (2, 8)}
MLFLOW_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
# Robustness factors (A2MIM / ImageNet-X style), in the order they are evaluated and shown.
Factor = Literal["occlusion", "colour", "blur", "noise", "scale", "texture"]
FACTORS: tuple[str, ...] = Factor.__args__
ROBUST_PREFIX, ROBUST_MEAN = "robust/miou/", "robust/miou_mean"
PROBE_PREFIX = "probe/"  # finetune.probe's metrics
PROBE_MIOU = PROBE_PREFIX + "miou"
